#pragma once
// The whole core API in one include: tensors, autograd, RNG and every op.
#include "core/autocast.h"
#include "core/autograd.h"
#include "core/checkpoint.h"
#include "core/ops/conv.h"
#include "core/ops/elementwise.h"
#include "core/ops/index.h"
#include "core/ops/linalg.h"
#include "core/ops/nn.h"
#include "core/ops/reduce.h"
#include "core/rng.h"
#include "core/safetensors.h"
#include "core/tensor.h"
