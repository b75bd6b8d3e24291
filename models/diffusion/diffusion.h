#pragma once
// The diffusion processes in one include: the ModelFn interface, Gaussian diffusion (DiT's
// DDPM/DDIM objective and samplers) and rectified flow (DiT-MoE --rf).
#include "models/diffusion/gaussian_diffusion.h"
#include "models/diffusion/model_fn.h"
#include "models/diffusion/rectified_flow.h"
