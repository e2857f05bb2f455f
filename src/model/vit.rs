//! Vision Transformer ViT-B/16 (Dosovitskiy et al. 2021), torchvision's layout and variable
//! names: `conv_proj` (16x16 patches), `class_token`, `encoder.pos_embedding`,
//! `encoder.layers.encoder_layer_N` (pre-norm blocks: `ln_1`, `self_attention` with
//! `in_proj_weight` / `out_proj`, `ln_2`, `mlp.0` / `mlp.3` with GELU), `encoder.ln`; the new
//! head replaces `heads.head`.
//!
//! Any image size that is a multiple of the patch size works: the position embeddings are
//! stored for 224 px (14 x 14 patches, as the pretrained weights have them) and resized as
//! torchvision's `interpolate_embeddings` does (bicubic, corners aligned, the class token's
//! kept) whenever the patch grid differs.
//!
//! Flat layer list: 0 = "patch embedding" (projection, class token, position embeddings),
//! 1..=12 = the encoder blocks, 13 = "final norm" (`encoder.ln`, then the class token's
//! output). LayerNorm only: frozen means parameters that do not train.

use tch::Tensor;
use tch::nn;

use super::{LayerInfo, Mode, Network};

const PATCH: i64 = 16;
/// The patch grid the position embeddings are stored for (224 px).
const GRID: i64 = 14;
const LN_EPS: f64 = 1e-6;

struct Block {
    ln_1: nn::LayerNorm,
    in_proj_weight: Tensor,
    in_proj_bias: Tensor,
    out_proj: nn::Linear,
    ln_2: nn::LayerNorm,
    fc1: nn::Linear,
    fc2: nn::Linear,
    heads: i64,
}

impl Block {
    fn new(p: nn::Path, dim: i64, mlp: i64, heads: i64) -> Self {
        let ln = || nn::LayerNormConfig { eps: LN_EPS, ..Default::default() };
        let attn = &p / "self_attention";
        let bound = (6.0 / (4 * dim) as f64).sqrt();
        Block {
            ln_1: nn::layer_norm(&p / "ln_1", vec![dim], ln()),
            in_proj_weight: attn.var("in_proj_weight", &[3 * dim, dim], nn::Init::Uniform { lo: -bound, up: bound }),
            in_proj_bias: attn.var("in_proj_bias", &[3 * dim], nn::Init::Const(0.0)),
            out_proj: nn::linear(&attn / "out_proj", dim, dim, Default::default()),
            ln_2: nn::layer_norm(&p / "ln_2", vec![dim], ln()),
            fc1: nn::linear(&p / "mlp" / 0, dim, mlp, Default::default()),
            fc2: nn::linear(&p / "mlp" / 3, mlp, dim, Default::default()),
            heads,
        }
    }

    /// torchvision's EncoderBlock (its dropouts are 0).
    fn forward(&self, x: &Tensor) -> Tensor {
        let (n, l, d) = x.size3().expect("tokens are [N, L, D]");
        let h = x.apply(&self.ln_1);
        let qkv = h.linear(&self.in_proj_weight, Some(&self.in_proj_bias));
        let heads = |t: &Tensor| t.view([n, l, self.heads, d / self.heads]).transpose(1, 2);
        let parts = qkv.chunk(3, -1);
        let (q, k, v) = (heads(&parts[0]), heads(&parts[1]), heads(&parts[2]));
        let a = Tensor::scaled_dot_product_attention::<Tensor>(&q, &k, &v, None, 0.0, false, None, false);
        let a = a.transpose(1, 2).reshape([n, l, d]).apply(&self.out_proj);
        let x = x + a;
        let y = x.apply(&self.ln_2).apply(&self.fc1).gelu("none").apply(&self.fc2);
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
}

impl Vit {
    /// ViT-B/16: 12 blocks of width 768, 12 heads, MLP 3072.
    pub fn b16(p: &nn::Path) -> Self {
        let (dim, depth, heads, mlp) = (768, 12, 12, 3072);
        let e = p / "encoder";
        let cfg = nn::ConvConfig { stride: PATCH, ..Default::default() };
        let blocks =
            (0..depth).map(|i| Block::new(&e / "layers" / format!("encoder_layer_{i}"), dim, mlp, heads)).collect();
        let mut info = vec![LayerInfo {
            prefixes: vec!["conv_proj".into(), "class_token".into(), "encoder.pos_embedding".into()],
            name: "patch embedding".into(),
            has_batchnorm: false,
        }];
        for i in 0..depth {
            info.push(LayerInfo {
                prefixes: vec![format!("encoder.layers.encoder_layer_{i}")],
                name: format!("block {i}"),
                has_batchnorm: false,
            });
        }
        info.push(LayerInfo { prefixes: vec!["encoder.ln".into()], name: "final norm".into(), has_batchnorm: false });
        Vit {
            conv_proj: nn::conv2d(p / "conv_proj", 3, dim, PATCH, cfg),
            class_token: p.var("class_token", &[1, 1, dim], nn::Init::Const(0.0)),
            pos_embedding: e.var(
                "pos_embedding",
                &[1, GRID * GRID + 1, dim],
                nn::Init::Randn { mean: 0.0, stdev: 0.02 },
            ),
            blocks,
            ln: nn::layer_norm(&e / "ln", vec![dim], nn::LayerNormConfig { eps: LN_EPS, ..Default::default() }),
            info,
            dim,
        }
    }

    /// The position embeddings for a `grid` x `grid` patch grid.
    fn positions(&self, grid: i64) -> Tensor {
        if grid == GRID {
            return self.pos_embedding.shallow_clone();
        }
        interpolate_positions(&self.pos_embedding, grid)
    }
}

/// torchvision's `interpolate_embeddings`: the class token's embedding kept, the patch
/// embeddings resized from their square grid to `grid` x `grid` (bicubic, corners aligned).
pub fn interpolate_positions(pos: &Tensor, grid: i64) -> Tensor {
    let (_, seq, dim) = pos.size3().expect("[1, 1 + g^2, D]");
    let old = ((seq - 1) as f64).sqrt() as i64;
    let token = pos.narrow(1, 0, 1);
    let img = pos.narrow(1, 1, seq - 1).permute([0, 2, 1]).reshape([1, dim, old, old]);
    let img = img.upsample_bicubic2d([grid, grid], true, None, None).reshape([1, dim, grid * grid]).permute([0, 2, 1]);
    Tensor::cat(&[token, img], 1)
}

impl Network for Vit {
    fn layers(&self) -> &[LayerInfo] {
        &self.info
    }

    fn forward_layer(&self, index: usize, xs: &Tensor, _mode: Mode) -> Tensor {
        if index == 0 {
            let (n, _, h, w) = xs.size4().expect("images are [N, C, H, W]");
            assert!(h == w && h % PATCH == 0, "ViT-B/16 takes square images whose side is a multiple of 16");
            let x = xs.apply(&self.conv_proj).reshape([n, self.dim, -1]).permute([0, 2, 1]);
            let token = self.class_token.expand([n, 1, self.dim], false).to_kind(x.kind());
            return Tensor::cat(&[token, x], 1) + self.positions(h / PATCH).to_kind(xs.kind());
        }
        if index <= self.blocks.len() {
            return self.blocks[index - 1].forward(xs);
        }
        xs.apply(&self.ln).select(1, 0)
    }

    fn feature_dim(&self) -> i64 {
        self.dim
    }

    fn pooled(&self) -> bool {
        false
    }
}
