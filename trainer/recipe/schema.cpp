// The recipe schema: the one place where recipe keys, defaults, ranges and docs are written.
#include "trainer/recipe/recipe.h"

namespace loom::trainer {
namespace {

// Bounds are doubles; 2^53 - 1 is the largest integer they hold exactly, so it stands for
// "no practical limit" on counts without printing a rounded 2^63.
constexpr double kMaxCount = 9007199254740991.0;

KeySpec integer(std::string key, std::string def, double min, double max, std::string doc) {
  return {std::move(key), KeyType::integer, std::move(def), std::move(doc), min, max, {}};
}
KeySpec number(std::string key, std::string def, double min, double max, std::string doc) {
  return {std::move(key), KeyType::number, std::move(def), std::move(doc), min, max, {}};
}
KeySpec boolean(std::string key, std::string def, std::string doc) {
  return {std::move(key), KeyType::boolean, std::move(def), std::move(doc), {}, {}, {}};
}
KeySpec string(std::string key, std::string def, std::vector<std::string> choices,
               std::string doc) {
  return {std::move(key),    KeyType::string, "\"" + def + "\"", std::move(doc), {}, {},
          std::move(choices)};
}

std::vector<KeySpec> make_schema() {
  return {
      string("task", "diffusion", {"diffusion", "classifier"},
             "What to train: a diffusion transformer, or the small ConvNet classifier that the "
             "evaluation uses to score samples (only [data], [train] and [optim] apply to it)."),

      // -- model --
      string("model.name", "custom", {},
             "\"custom\" builds the model from the fields below; a named config (\"DiT-S/2\", "
             "\"DiT-B/2\", \"DiT-XL/2\", \"DiT-MoE-S/2-8E2A\", ...) sets patch_size, hidden_size, "
             "depth, num_heads, mlp_ratio and the expert fields, overriding the values here."),
      integer("model.input_size", "28", 4, 4096,
              "Side of the square input in pixels (or latent cells); divisible by patch_size."),
      integer("model.in_channels", "1", 1, 64,
              "Input channels: 1 for Fashion-MNIST, 3 for RGB images, 4 for SD-VAE latents."),
      integer("model.patch_size", "4", 1, 64, "Side of the square patches that become tokens."),
      integer("model.hidden_size", "128", 8, 65536,
              "Token width C; divisible by num_heads (and by parallel.tp)."),
      integer("model.depth", "4", 1, 1024, "Number of transformer blocks."),
      integer("model.num_heads", "4", 1, 1024, "Attention heads per block."),
      number("model.mlp_ratio", "4.0", 0.25, 64,
             "Hidden width of each MLP (or expert) as a multiple of hidden_size."),
      integer("model.num_classes", "10", 1, 1000000,
              "Class labels for conditioning (one extra embedding is the null class for CFG)."),
      number("model.class_dropout_prob", "0.1", 0, 1,
             "Probability that a training label is replaced by the null class (enables "
             "classifier-free guidance)."),
      boolean("model.learn_sigma", "true",
              "Also predict the per-pixel variance (output channels 2 * in_channels), trained "
              "with the variational bound as in DiT; ddpm objective only."),
      integer("model.num_experts", "4", 0, 4096,
              "Routed experts per MoE MLP; 0 = dense DiT (plain MLPs, the expert fields are "
              "ignored)."),
      integer("model.top_k", "2", 1, 64, "Routed experts each token is sent to; <= num_experts."),
      integer("model.num_shared_experts", "1", 0, 64,
              "Experts every token passes through in addition to its top_k routed ones."),
      number("model.aux_loss_coef", "0.01", 0, 100,
             "Weight of the router's load-balancing loss added to the diffusion loss."),
      number("model.capacity_factor", "0", 0, 1000,
             "Expert capacity: each expert keeps at most ceil(capacity_factor * N * top_k / "
             "num_experts) of a rank's N tokens' assignments per layer, the first in token order, "
             "and drops the rest (they add nothing to the output); 0 = no limit (dropless, as "
             "DiT-MoE)."),
      boolean("model.aux_loss_global_counts", "false",
              "Compute the load-balancing loss from the expert counts summed over the "
              "parallel.ep group (one all-reduce per layer) instead of each rank's micro-batch, "
              "so it penalizes the load the experts actually see; no effect with ep = 1."),

      // -- diffusion --
      string("diffusion.objective", "ddpm", {"ddpm", "rectified_flow"},
             "Training objective: DDPM noise prediction (linear beta schedule) or rectified flow "
             "(velocity prediction on straight paths)."),
      integer("diffusion.num_timesteps", "1000", 1, 100000,
              "Discrete timesteps of the DDPM schedule (rectified flow samples t in [0, 1] and "
              "scales it by this for the timestep embedding)."),

      // -- data --
      string("data.source", "fashion_mnist",
             {"fashion_mnist", "image_folder", "latents", "synthetic"},
             "Where training examples come from: the Fashion-MNIST IDX files, a folder of "
             "class-named subfolders of images, a safetensors file of precomputed latents, or "
             "seeded random tensors (for benchmarks and tests)."),
      string("data.path", "", {},
             "File or folder for the source; \"\" = its default location (Fashion-MNIST: "
             "$LOOM_FASHION_MNIST_DIR or /usr/share/datasets/fashion-mnist)."),
      boolean("data.hflip", "false", "Flip each training image horizontally with probability 1/2."),
      integer("data.limit", "-1", -1, kMaxCount, "Use at most this many examples; -1 = all."),
      integer("data.prefetch", "2", 1, 64,
              "Batches the loader thread prepares ahead of the step (at least 1)."),
      integer("data.synthetic_size", "10000", 1, kMaxCount,
              "Examples in the synthetic dataset (data.source = \"synthetic\")."),

      // -- train --
      integer("train.steps", "800", 1, kMaxCount, "Optimizer steps to train for."),
      integer("train.batch_size", "128", 1, 1048576,
              "Global batch: examples per optimizer step, summed over data-parallel ranks and "
              "accumulation micro-batches; divisible by parallel.dp * train.grad_accum."),
      integer("train.grad_accum", "1", 1, 4096,
              "Micro-batches whose gradients are accumulated before each optimizer step."),
      integer("train.seed", "0", 0, kMaxCount,
              "Seed of the initial weights, the data order, the noise and the timesteps."),
      integer("train.log_every", "50", 1, kMaxCount,
              "Steps between console lines and metrics.jsonl records."),
      integer("train.sample_every", "200", 0, kMaxCount,
              "Steps between sample grids written to samples/; 0 disables."),
      integer("train.checkpoint_every", "200", 0, kMaxCount,
              "Steps between checkpoints (one is always written at the end); 0 disables the "
              "periodic ones."),
      integer("train.keep_checkpoints", "3", 1, 1000000,
              "Newest checkpoints kept; an older one is deleted only after a newer one is "
              "complete."),
      number("train.ema_decay", "0.999", 0, 1,
             "Decay of the exponential moving average of the weights that sampling and "
             "evaluation use, after a warmup min(decay, (1+n)/(10+n)) over the first updates; "
             "0 makes the EMA a copy of the weights."),
      number("train.grad_clip", "1.0", 0, 1e6,
             "Clip the global gradient norm to this value; 0 disables."),
      integer("train.threads", "0", 0, 4096,
              "CPU threads per rank; 0 = LOOM_NUM_THREADS or all cores."),
      string("train.device", "cpu", {"cpu", "cuda"},
             "Where the model trains: the CPU, or CUDA (the GPU of the rank's local index under "
             "mpirun, else GPU 0)."),
      string("train.precision", "bf16", {"f32", "bf16"},
             "Compute precision on CUDA: bf16 autocast (f32 master weights, gradients and "
             "optimizer state; matmuls and attention in bf16) or f32 throughout. The CPU always "
             "computes in f32."),
      boolean("train.allow_tf32", "false",
              "Let f32 matmuls on CUDA use TF32 tensor cores (faster, about 1e-3 relative "
              "error)."),
      boolean("train.activation_checkpointing", "false",
              "Recompute each block's activations in the backward pass instead of keeping them "
              "(less memory, about a third more compute)."),
      integer("train.max_nonfinite_steps", "5", 0, 1000000,
              "Consecutive steps with a non-finite loss or gradient that are skipped before the "
              "run stops with an error; 0 stops at the first."),

      // -- optim --
      string("optim.name", "muon", {"adamw", "sgd", "muon"},
             "Optimizer: AdamW (decoupled weight decay), SGD with momentum, or Muon for the "
             "parameters matched by muon_patterns with AdamW for all the others."),
      number("optim.lr", "1e-3", 0, 100, "Peak learning rate."),
      number("optim.weight_decay", "0.0", 0, 100,
             "Decoupled weight decay (AdamW and Muon) or L2 (SGD)."),
      number("optim.beta1", "0.9", 0, 1, "AdamW first-moment decay."),
      number("optim.beta2", "0.999", 0, 1, "AdamW second-moment decay."),
      number("optim.eps", "1e-8", 0, 1, "AdamW denominator epsilon."),
      number("optim.momentum", "0.9", 0, 1, "SGD momentum; 0 = plain SGD."),
      string("optim.schedule", "warmup_cosine", {"constant", "cosine", "warmup_cosine", "wsd"},
             "Learning-rate schedule: constant (after warmup_steps of linear warmup), cosine "
             "decay from lr to min_lr over train.steps, linear warmup then cosine decay, or "
             "warmup-stable-decay (linear warmup, constant lr, linear decay to min_lr over the "
             "last decay_fraction of the steps). With muon every group's rate follows the same "
             "schedule, scaled by its own peak over lr."),
      integer("optim.warmup_steps", "50", 0, kMaxCount,
              "Steps of linear warmup from 0 to lr; at most train.steps."),
      number("optim.min_lr", "1e-4", 0, 100, "Learning rate at the end of a cosine or wsd decay."),
      number("optim.decay_fraction", "0.2", 0, 1,
             "wsd schedule: share of train.steps spent in the final linear decay."),
      number("optim.muon_lr", "0.02", 0, 100,
             "Muon peak learning rate (in units of spectral norm per update with the rows_cols "
             "scale)."),
      number("optim.muon_momentum", "0.95", 0, 1,
             "Muon momentum: EMA decay of the gradient buffer that is orthogonalized."),
      boolean("optim.muon_nesterov", "true",
              "Muon orthogonalizes the Nesterov look-ahead (1 - momentum) g + momentum buffer "
              "instead of the momentum buffer itself."),
      string("optim.muon_scale", "rows_cols", {"rows_cols", "moonlight"},
             "Muon update scale per matrix: sqrt(max(1, rows/cols)) (reference Muon) or "
             "0.2 sqrt(max(rows, cols)) (Moonlight: update RMS like AdamW's, so AdamW-sized "
             "rates fit)."),
      string("optim.muon_patterns",
             "blocks.*.attn.qkv.weight, blocks.*.attn.proj.weight, blocks.*.mlp.fc1.weight, "
             "blocks.*.mlp.fc2.weight, blocks.*.moe.experts.w_gate, blocks.*.moe.experts.w_up, "
             "blocks.*.moe.experts.w_down, blocks.*.moe.shared.*.weight, "
             "blocks.*.adaLN_modulation.1.weight",
             {},
             "Comma-separated parameter-name patterns ('*' matches any characters) that Muon "
             "trains when name = \"muon\"; everything else (embedders, final layer, routers, "
             "biases) gets AdamW. The default is the DiT's hidden matrices: attention, MLPs, "
             "experts (each expert a matrix of its own) and the blocks' adaLN linears."),
      number("optim.adamw_lr", "1e-2", -1, 100,
             "Peak learning rate of the AdamW group when name = \"muon\"; -1 = optim.lr."),
      boolean("optim.shard_state", "false",
              "ZeRO-1: shard the optimizer state over the parallel.dp ranks. Each parameter (each "
              "expert matrix for Muon) has one owner rank, balanced by size (by Newton-Schulz "
              "FLOPs for Muon: distributed Muon), that keeps its state and computes its update; "
              "one all-gather per step hands every rank the new values. Same results as "
              "unsharded; optimizer memory per rank divided by about dp. No effect with dp = 1."),

      // -- sample --
      string("sample.sampler", "ddim", {"ddpm", "ddim", "euler"},
             "Sampler for sample grids and evaluation: ancestral DDPM or DDIM (ddpm objective) "
             "over respaced timesteps, Euler ODE steps (rectified_flow objective)."),
      integer("sample.steps", "25", 1, 100000, "Denoising steps per sample."),
      number("sample.cfg_scale", "2.0", 0, 100,
             "Classifier-free guidance scale; 1 = conditional model only, no guidance."),
      number("sample.eta", "0.0", 0, 1,
             "DDIM noise: 0 = deterministic, 1 = as much noise as ancestral sampling."),
      integer("sample.per_class", "8", 1, 10000,
              "Samples per class in each grid (a row per class)."),
      integer("sample.seed", "1234", 0, kMaxCount,
              "Seed of the sampling noise, so grids from different steps are comparable."),

      // -- eval --
      string("eval.classifier", "", {},
             "Checkpoint of the classifier that scores samples (a task = \"classifier\" run); "
             "\"\" = runs/fmnist_classifier/checkpoints/latest."),
      integer("eval.per_class", "50", 1, 1000000, "Samples per class generated for evaluation."),
      integer("eval.steps", "25", 1, 100000, "Denoising steps per evaluation sample."),

      // -- parallel --
      integer("parallel.dp", "1", 1, 65536,
              "Data-parallel replicas; dp * tp * sp must equal the number of ranks."),
      integer("parallel.tp", "1", 1, 1024,
              "Tensor-parallel ranks (Megatron) inside each data-parallel replica: attention "
              "heads and dense MLP widths are split over them (MoE experts are split by "
              "parallel.ep instead). "
              "tp * sp divides model.num_heads; tp divides the dense MLP width."),
      integer("parallel.sp", "1", 1, 1024,
              "Ulysses sequence-parallel ranks inside each replica: each holds 1/sp of the tokens, "
              "and all-to-alls trade token shards for head shards around attention. Divides the "
              "token count (input_size / patch_size)^2."),
      boolean("parallel.sequence_parallel", "false",
              "Megatron sequence parallelism on the tp group: the norms, modulation and residual "
              "adds between the tensor-parallel layers hold 1/tp of the tokens instead of "
              "repeating the same work on every tp rank; the token count must divide by sp * tp. "
              "No effect with tp = 1."),
      integer("parallel.ep", "1", 1, 65536,
              "Expert-parallel ranks: groups of ep consecutive dp ranks that share out the routed "
              "experts (num_experts / ep each) and exchange tokens with all-to-alls; router, "
              "shared experts and everything else stay data-parallel. Divides parallel.dp and "
              "model.num_experts; not with optim.shard_state yet."),
      number("parallel.bucket_mb", "25.0", 1e-6, 1e6,
             "Size in MiB of the gradient buckets that data parallelism averages over the dp "
             "ranks while backward is still running (a bucket's all-reduce starts as soon as its "
             "last gradient is ready); PyTorch DDP's default is 25."),
  };
}

}  // namespace

const char* key_type_name(KeyType type) {
  switch (type) {
    case KeyType::integer:
      return "integer";
    case KeyType::number:
      return "number";
    case KeyType::boolean:
      return "boolean";
    case KeyType::string:
      return "string";
  }
  return "?";
}

const std::vector<KeySpec>& recipe_schema() {
  static const std::vector<KeySpec> schema = make_schema();
  return schema;
}

}  // namespace loom::trainer
