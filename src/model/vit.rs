//! Vision Transformers: torchvision's ViT-B/16 (Dosovitskiy et al. 2021) and Meta's DINOv2
//! ViT-S/14 and ViT-B/14 (Oquab et al. 2023), each with its reference's variable names.
//!
//! ViT-B/16 (torchvision): `conv_proj` (16x16 patches), `class_token`,
//! `encoder.pos_embedding`, `encoder.layers.encoder_layer_N` (pre-norm blocks: `ln_1`,
//! `self_attention` with `in_proj_weight` / `out_proj`, `ln_2`, `mlp.0` / `mlp.3` with GELU),
//! `encoder.ln`; the new head replaces `heads.head`. The position embeddings are stored for
//! 224 px (14 x 14 patches) and resized as torchvision's `interpolate_embeddings` does
//! (bicubic, corners aligned, the class token's kept) whenever the patch grid differs.
//!
//! DINOv2 (Meta's released checkpoints): `patch_embed.proj` (14x14 patches), `cls_token`,
//! `pos_embed` (stored for 518 px, 37 x 37 patches), `mask_token` (used only in
//! pretraining; kept so the checkpoint loads as it is), `blocks.N` (`norm1`, `attn.qkv`,
//! `attn.proj`, `ls1.gamma` layer scale, `norm2`, `mlp.fc1` / `mlp.fc2` with GELU,
//! `ls2.gamma`), `norm`; the checkpoint has no classifier, the new head is `head`. The
//! position embeddings resize as Meta's `interpolate_pos_encoding` does (bicubic, corners not
//! aligned, scale factor (grid + 0.1) / 37, no antialiasing).
//!
//! Either way any image size that is a multiple of the patch works. The pooled feature is
//! the class token's output after the final norm, or (`model.pool = "cls_mean"`) that
//! concatenated with the mean of the patch tokens' outputs, as DINOv2's linear probes use.
//!
//! Flat layer list: 0 = "patch embedding" (projection, class token, position embeddings),
//! 1..=depth = the encoder blocks, depth + 1 = "final norm" (then the pooling). LayerNorm
//! only: frozen means parameters that do not train.

use tch::Tensor;
use tch::nn;

use super::{LayerInfo, Mode, Network};
use crate::config::spec::Pool;

const LN_EPS: f64 = 1e-6;

/// Whose ViT: the variable names and the position-embedding resize differ.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Flavour {
    Torchvision,
    Dinov2,
}

struct Block {
    ln_1: nn::LayerNorm,
    qkv_weight: Tensor,
    qkv_bias: Tensor,
    out_proj: nn::Linear,
    ln_2: nn::LayerNorm,
    fc1: nn::Linear,
    fc2: nn::Linear,
    /// DINOv2's layer scales (`ls1.gamma`, `ls2.gamma`) on the two residual branches.
    layer_scale: Option<(Tensor, Tensor)>,
    heads: i64,
}

impl Block {
    fn new(p: nn::Path, dim: i64, mlp: i64, heads: i64, flavour: Flavour) -> Self {
        let ln = |p: nn::Path| nn::layer_norm(p, vec![dim], nn::LayerNormConfig { eps: LN_EPS, ..Default::default() });
        match flavour {
            Flavour::Torchvision => {
                let attn = &p / "self_attention";
                let bound = (6.0 / (4 * dim) as f64).sqrt();
                Block {
                    ln_1: ln(&p / "ln_1"),
                    qkv_weight: attn.var(
                        "in_proj_weight",
                        &[3 * dim, dim],
                        nn::Init::Uniform { lo: -bound, up: bound },
                    ),
                    qkv_bias: attn.var("in_proj_bias", &[3 * dim], nn::Init::Const(0.0)),
                    out_proj: nn::linear(&attn / "out_proj", dim, dim, Default::default()),
                    ln_2: ln(&p / "ln_2"),
                    fc1: nn::linear(&p / "mlp" / 0, dim, mlp, Default::default()),
                    fc2: nn::linear(&p / "mlp" / 3, mlp, dim, Default::default()),
                    layer_scale: None,
                    heads,
                }
            }
            Flavour::Dinov2 => {
                let attn = &p / "attn";
                let qkv = nn::linear(&attn / "qkv", dim, 3 * dim, Default::default());
                let gamma = |name: &str| (&p / name).var("gamma", &[dim], nn::Init::Const(1.0));
                Block {
                    ln_1: ln(&p / "norm1"),
                    qkv_weight: qkv.ws,
                    qkv_bias: qkv.bs.expect("a Linear with a bias"),
                    out_proj: nn::linear(&attn / "proj", dim, dim, Default::default()),
                    ln_2: ln(&p / "norm2"),
                    fc1: nn::linear(&p / "mlp" / "fc1", dim, mlp, Default::default()),
                    fc2: nn::linear(&p / "mlp" / "fc2", mlp, dim, Default::default()),
                    layer_scale: Some((gamma("ls1"), gamma("ls2"))),
                    heads,
                }
            }
        }
    }

    /// A pre-norm encoder block (the references' dropouts and drop paths are 0).
    fn forward(&self, x: &Tensor) -> Tensor {
        let (n, l, d) = x.size3().expect("tokens are [N, L, D]");
        let h = x.apply(&self.ln_1);
        let qkv = h.linear(&self.qkv_weight, Some(&self.qkv_bias));
        let heads = |t: &Tensor| t.view([n, l, self.heads, d / self.heads]).transpose(1, 2);
        let parts = qkv.chunk(3, -1);
        let (q, k, v) = (heads(&parts[0]), heads(&parts[1]), heads(&parts[2]));
        let a = Tensor::scaled_dot_product_attention::<Tensor>(&q, &k, &v, None, 0.0, false, None, false);
        let a = a.transpose(1, 2).reshape([n, l, d]).apply(&self.out_proj);
        // Out of place: the layer scale's gradient needs the branch's output as it was.
        let a = match &self.layer_scale {
            Some((ls1, _)) => a * ls1,
            None => a,
        };
        let x = x + a;
        let y = x.apply(&self.ln_2).apply(&self.fc1).gelu("none").apply(&self.fc2);
        let y = match &self.layer_scale {
            Some((_, ls2)) => y * ls2,
            None => y,
        };
        x + y
    }
}

pub(crate) struct Vit {
    conv_proj: nn::Conv2D,
    class_token: Tensor,
    pos_embedding: Tensor,
    blocks: Vec<Block>,
    ln: nn::LayerNorm,
    info: Vec<LayerInfo>,
    dim: i64,
    patch: i64,
    /// The patch grid the position embeddings are stored for.
    grid: i64,
    flavour: Flavour,
    pool: Pool,
}

impl Vit {
    /// torchvision's ViT-B/16: 12 blocks of width 768, 12 heads, MLP 3072, 224 px.
    pub(crate) fn b16(p: &nn::Path, pool: Pool) -> Self {
        Self::new(p, Flavour::Torchvision, (768, 12, 12, 3072), (16, 14), pool)
    }

    /// DINOv2 ViT-S/14: 12 blocks of width 384, 6 heads, MLP 1536, stored for 518 px.
    pub(crate) fn dinov2_s14(p: &nn::Path, pool: Pool) -> Self {
        Self::new(p, Flavour::Dinov2, (384, 12, 6, 1536), (14, 37), pool)
    }

    /// DINOv2 ViT-B/14: 12 blocks of width 768, 12 heads, MLP 3072, stored for 518 px.
    pub(crate) fn dinov2_b14(p: &nn::Path, pool: Pool) -> Self {
        Self::new(p, Flavour::Dinov2, (768, 12, 12, 3072), (14, 37), pool)
    }

    fn new(
        p: &nn::Path,
        flavour: Flavour,
        (dim, depth, heads, mlp): (i64, usize, i64, i64),
        (patch, grid): (i64, i64),
        pool: Pool,
    ) -> Self {
        let cfg = nn::ConvConfig { stride: patch, ..Default::default() };
        let positions = nn::Init::Randn { mean: 0.0, stdev: 0.02 };
        let (conv_proj, class_token, pos_embedding, block_path, final_norm) = match flavour {
            Flavour::Torchvision => {
                let e = p / "encoder";
                (
                    nn::conv2d(p / "conv_proj", 3, dim, patch, cfg),
                    p.var("class_token", &[1, 1, dim], nn::Init::Const(0.0)),
                    e.var("pos_embedding", &[1, grid * grid + 1, dim], positions),
                    (0..depth).map(|i| format!("encoder.layers.encoder_layer_{i}")).collect::<Vec<_>>(),
                    "encoder.ln",
                )
            }
            Flavour::Dinov2 => {
                // Pretraining's mask token: loaded with the checkpoint, never trained or used.
                let _ = p.zeros_no_train("mask_token", &[1, dim]);
                (
                    nn::conv2d(p / "patch_embed" / "proj", 3, dim, patch, cfg),
                    p.var("cls_token", &[1, 1, dim], nn::Init::Randn { mean: 0.0, stdev: 1e-6 }),
                    p.var("pos_embed", &[1, grid * grid + 1, dim], positions),
                    (0..depth).map(|i| format!("blocks.{i}")).collect(),
                    "norm",
                )
            }
        };
        let at = |name: &str| name.split('.').fold(p.clone(), |path, part| &path / part);
        let blocks = block_path.iter().map(|name| Block::new(at(name), dim, mlp, heads, flavour)).collect();
        let embedding = match flavour {
            Flavour::Torchvision => vec!["conv_proj".into(), "class_token".into(), "encoder.pos_embedding".into()],
            Flavour::Dinov2 => {
                vec!["patch_embed".into(), "cls_token".into(), "pos_embed".into(), "mask_token".into()]
            }
        };
        let mut info = vec![LayerInfo { prefixes: embedding, name: "patch embedding".into(), has_batchnorm: false }];
        for (i, prefix) in block_path.into_iter().enumerate() {
            info.push(LayerInfo { prefixes: vec![prefix], name: format!("block {i}"), has_batchnorm: false });
        }
        info.push(LayerInfo { prefixes: vec![final_norm.into()], name: "final norm".into(), has_batchnorm: false });
        let ln = nn::layer_norm(at(final_norm), vec![dim], nn::LayerNormConfig { eps: LN_EPS, ..Default::default() });
        Vit { conv_proj, class_token, pos_embedding, blocks, ln, info, dim, patch, grid, flavour, pool }
    }

    /// The position embeddings for a `grid` x `grid` patch grid.
    fn positions(&self, grid: i64) -> Tensor {
        if grid == self.grid {
            return self.pos_embedding.shallow_clone();
        }
        match self.flavour {
            Flavour::Torchvision => interpolate_positions(&self.pos_embedding, grid),
            Flavour::Dinov2 => interpolate_positions_dinov2(&self.pos_embedding, grid),
        }
    }
}

/// The class token's embedding kept, the patch embeddings resized from their square grid to
/// `grid` x `grid` by `resize` (on [1, D, g, g]).
fn resize_positions(pos: &Tensor, resize: impl Fn(&Tensor, i64) -> Tensor) -> Tensor {
    let (_, seq, dim) = pos.size3().expect("[1, 1 + g^2, D]");
    let old = ((seq - 1) as f64).sqrt() as i64;
    let token = pos.narrow(1, 0, 1);
    let img = pos.narrow(1, 1, seq - 1).permute([0, 2, 1]).reshape([1, dim, old, old]);
    let img = resize(&img.to_kind(tch::Kind::Float), old);
    let grid = img.size()[2];
    let img = img.reshape([1, dim, grid * grid]).permute([0, 2, 1]).to_kind(pos.kind());
    Tensor::cat(&[token, img], 1)
}

/// torchvision's `interpolate_embeddings`: bicubic, corners aligned.
pub fn interpolate_positions(pos: &Tensor, grid: i64) -> Tensor {
    resize_positions(pos, |img, _| img.upsample_bicubic2d([grid, grid], true, None, None))
}

/// DINOv2's `interpolate_pos_encoding` as its released models are configured
/// (`interpolate_offset` 0.1, no antialiasing): bicubic, corners not aligned, the scale
/// factor (grid + 0.1) / old grid given to the kernel (so the sampling positions are not
/// those of a plain resize to `grid`).
pub fn interpolate_positions_dinov2(pos: &Tensor, grid: i64) -> Tensor {
    resize_positions(pos, |img, old| {
        let scale = (grid as f64 + 0.1) / old as f64;
        img.upsample_bicubic2d([grid, grid], false, scale, scale)
    })
}

impl Network for Vit {
    fn layers(&self) -> &[LayerInfo] {
        &self.info
    }

    fn forward_layer(&self, index: usize, xs: &Tensor, _mode: Mode) -> Tensor {
        if index == 0 {
            let (n, _, h, w) = xs.size4().expect("images are [N, C, H, W]");
            let p = self.patch;
            assert!(h == w && h % p == 0, "this ViT takes square images whose side is a multiple of {p}");
            let x = xs.apply(&self.conv_proj).reshape([n, self.dim, -1]).permute([0, 2, 1]);
            let token = self.class_token.expand([n, 1, self.dim], false).to_kind(x.kind());
            return Tensor::cat(&[token, x], 1) + self.positions(h / p).to_kind(xs.kind());
        }
        if index <= self.blocks.len() {
            return self.blocks[index - 1].forward(xs);
        }
        let x = xs.apply(&self.ln);
        let cls = x.select(1, 0);
        match self.pool {
            Pool::Cls => cls,
            Pool::ClsMean => {
                let patches = x.narrow(1, 1, x.size()[1] - 1).mean_dim(1, false, None);
                Tensor::cat(&[cls, patches], 1)
            }
        }
    }

    fn feature_dim(&self) -> i64 {
        match self.pool {
            Pool::Cls => self.dim,
            Pool::ClsMean => 2 * self.dim,
        }
    }

    fn pooled(&self) -> bool {
        false
    }

    fn convolutional(&self) -> bool {
        false
    }
}
