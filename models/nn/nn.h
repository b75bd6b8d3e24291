#pragma once
// Every loom::nn module in one include.
#include "models/nn/attention.h"
#include "models/nn/conv.h"
#include "models/nn/embedding.h"
#include "models/nn/init.h"
#include "models/nn/layer_norm.h"
#include "models/nn/linear.h"
#include "models/nn/mlp.h"
#include "models/nn/module.h"
#include "models/nn/rms_norm.h"
#include "models/nn/swiglu.h"
