//! The networks: each backbone's layers named as its reference state_dict, the flat
//! layer list that `freeze_up_to` indexes, and the classifier a run trains. What a
//! backbone is called and where its weights come from is in catalog.rs.

mod freeze;
pub(crate) mod schedule;
pub mod pickle;
pub mod weights;

mod convnext;
mod efficientnet;
mod efficientnet_lite;
mod mobilenet_v2;
mod mobilenet_v3;
mod regnet;
mod resnet;
mod vgg;
mod vit;

pub use vit::{interpolate_positions, interpolate_positions_dinov2};

use tch::Tensor;

pub use self::freeze::FreezePlan;
pub use self::schedule::Schedule;
pub use crate::config::catalog::Backbone;
use crate::config::spec::{BatchNormPolicy, HeadInit, Pool};
use tch::nn;

/// One entry of a backbone's flat layer list.
#[derive(Debug, Clone, PartialEq)]
pub struct LayerInfo {
    /// Variable-name prefixes of the layer's parameters and buffers (`_blocks.3`).
    pub prefixes: Vec<String>,
    /// A short human name (`stem`, `block 3`, `head conv`).
    pub name: String,
    pub has_batchnorm: bool,
}

/// How a layer runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// BatchNorm on batch statistics (updating its running averages); drop-connect and dropout on.
    Train,
    /// BatchNorm on its running statistics; autograd records as usual.
    Eval,
    /// As `Eval`, for a caller that holds `tch::no_grad`: a BatchNorm may be folded into
    /// the convolution before it (see [`conv_bn`]).
    Infer,
}

impl Mode {
    pub fn train(self) -> bool {
        self == Mode::Train
    }
}

/// A built backbone: layers run one at a time so that a frozen prefix can run
/// without autograd and in inference mode.
pub trait Network: Send {
    fn layers(&self) -> &[LayerInfo];
    /// Runs layer `index` in `mode`.
    fn forward_layer(&self, index: usize, xs: &Tensor, mode: Mode) -> Tensor;
    /// Width of the feature vector fed to the head.
    fn feature_dim(&self) -> i64;
    /// Whether the last layer's output is global-average-pooled into that vector
    /// (false where the layers end in fully connected ones already, as VGG's do).
    fn pooled(&self) -> bool {
        true
    }
    /// Whether convolutions do most of its work (channels-last memory speeds those up on
    /// CUDA); a vision transformer's one convolution, its patch embedding, does not count.
    fn convolutional(&self) -> bool {
        true
    }
}

impl Backbone {
    /// Builds the backbone's variables under `p`, named as in its reference state_dict.
    pub fn build(self, p: &nn::Path) -> Box<dyn Network> {
        self.build_pooled(p, Pool::default())
    }

    /// [`Backbone::build`], a Vision Transformer pooling its tokens as `pool` says (the
    /// convolutional backbones average their last feature map whatever it says).
    pub(crate) fn build_pooled(self, p: &nn::Path, pool: Pool) -> Box<dyn Network> {
        match self {
            Backbone::EfficientnetLite0 => Box::new(efficientnet_lite::EfficientNetLite::lite0(p)),
            Backbone::MobilenetV2 => Box::new(mobilenet_v2::MobileNetV2::new(p)),
            Backbone::Resnet18 => Box::new(resnet::ResNet::new(p, [2, 2, 2, 2], false)),
            Backbone::Resnet34 => Box::new(resnet::ResNet::new(p, [3, 4, 6, 3], false)),
            Backbone::Resnet50 => Box::new(resnet::ResNet::new(p, [3, 4, 6, 3], true)),
            Backbone::Vgg16 => Box::new(vgg::Vgg::vgg16(p, false)),
            Backbone::Vgg16Bn => Box::new(vgg::Vgg::vgg16(p, true)),
            Backbone::ConvnextTiny => Box::new(convnext::ConvNeXt::new(p, [3, 3, 9, 3], 0.1)),
            Backbone::ConvnextSmall => Box::new(convnext::ConvNeXt::new(p, [3, 3, 27, 3], 0.4)),
            Backbone::MobilenetV3Small => Box::new(mobilenet_v3::MobileNetV3::small(p)),
            Backbone::MobilenetV3Large => Box::new(mobilenet_v3::MobileNetV3::large(p)),
            Backbone::EfficientnetB0 => Box::new(efficientnet::EfficientNet::b(p, 1.0, 1.0)),
            Backbone::EfficientnetB1 => Box::new(efficientnet::EfficientNet::b(p, 1.0, 1.1)),
            Backbone::EfficientnetB2 => Box::new(efficientnet::EfficientNet::b(p, 1.1, 1.2)),
            Backbone::EfficientnetB3 => Box::new(efficientnet::EfficientNet::b(p, 1.2, 1.4)),
            Backbone::EfficientnetV2S => Box::new(efficientnet::EfficientNet::v2_s(p)),
            Backbone::VitB16 => Box::new(vit::Vit::b16(p, pool)),
            Backbone::Dinov2Vits14 => Box::new(vit::Vit::dinov2_s14(p, pool)),
            Backbone::Dinov2Vitb14 => Box::new(vit::Vit::dinov2_b14(p, pool)),
            Backbone::RegnetY800mf => Box::new(regnet::RegNet::y_800mf(p)),
        }
    }
}

/// A backbone with a classifier head: the model that a run trains.
pub struct Classifier {
    pub backbone: Box<dyn Network>,
    dropout: f64,
    /// Optional hidden layers of the head (Linear, ReLU, dropout each).
    hidden: Vec<nn::Linear>,
    fc: nn::Linear,
}

impl Classifier {
    /// Builds `backbone` under `p` and a new `classes`-way head at its classifier's name.
    pub fn new(kind: Backbone, p: &nn::Path, classes: i64, dropout: f64) -> Self {
        Self::with_hidden(kind, p, classes, dropout, &[], HeadInit::default(), Pool::default())
    }

    /// As [`Classifier::new`], with hidden layers of the given widths in the head,
    /// named `<classifier>.hidden.<i>`, initialised as `init` says, and a Vision
    /// Transformer's tokens pooled as `pool` says.
    pub fn with_hidden(
        kind: Backbone,
        p: &nn::Path,
        classes: i64,
        dropout: f64,
        hidden: &[i64],
        init: HeadInit,
        pool: Pool,
    ) -> Self {
        let linear = |p: nn::Path, fan_in: i64, out: i64| head_linear(p, fan_in, out, init);
        let backbone = kind.build_pooled(p, pool);
        let mut head = p.clone();
        for part in kind.classifier_prefix().split('.') {
            head = &head / part;
        }
        let mut width = backbone.feature_dim();
        let hidden = hidden
            .iter()
            .enumerate()
            .map(|(i, &h)| {
                let layer = linear(&head / "hidden" / i, width, h);
                width = h;
                layer
            })
            .collect();
        let fc = linear(head, width, classes);
        Classifier { backbone, dropout, hidden, fc }
    }

    /// Pooled backbone features. Layers below `frozen` run without autograd;
    /// `bn` decides which layers use batch statistics when `train` is set.
    pub fn features(&self, xs: &Tensor, frozen: usize, bn: BatchNormPolicy, train: bool) -> Tensor {
        self.features_from(xs, 0, frozen, bn, train)
    }

    /// The backbone layer that variable `name` belongs to (`None`: the head).
    pub(crate) fn layer_of(&self, name: &str) -> Option<usize> {
        self.backbone.layers().iter().position(|l| l.prefixes.iter().any(|p| has_prefix(name, p)))
    }

    /// The freeze plan of this model's backbone with its first `frozen` layers frozen.
    pub fn plan(&self, frozen: usize, bn: BatchNormPolicy) -> FreezePlan {
        FreezePlan::new(frozen, bn, self.backbone.layers().len())
    }

    /// [`Classifier::features`] from layer `start` on, for `x` the output of layer `start - 1`.
    pub(crate) fn features_from(
        &self,
        x: &Tensor,
        start: usize,
        frozen: usize,
        bn: BatchNormPolicy,
        train: bool,
    ) -> Tensor {
        let plan = self.plan(frozen, bn);
        let (frozen, layers) = (plan.frozen(), self.backbone.layers().len());
        let mut x = tch::no_grad(|| {
            let mut x = x.shallow_clone();
            for i in start..frozen.max(start) {
                x = self.backbone.forward_layer(i, &x, plan.mode(i, train));
            }
            x
        });
        for i in frozen.max(start)..layers {
            x = self.backbone.forward_layer(i, &x, plan.mode(i, train));
        }
        self.finish(&x)
    }

    /// Global pooling and flattening after the last layer (for backbones that pool).
    pub fn finish(&self, x: &Tensor) -> Tensor {
        if self.backbone.pooled() { x.adaptive_avg_pool2d([1, 1]).flatten(1, -1) } else { x.shallow_clone() }
    }

    /// What a frozen prefix of `k` layers computes, in inference mode and without
    /// autograd: the output of layer `k - 1`, pooled when `k` is every layer. This
    /// is what the feature cache stores.
    pub(crate) fn frozen_prefix(&self, xs: &Tensor, k: usize) -> Tensor {
        self.frozen_prefixes(xs, &[k]).pop().expect("one depth, one output")
    }

    /// [`Classifier::frozen_prefix`] at several depths `ks` (ascending) in one pass.
    pub fn frozen_prefixes(&self, xs: &Tensor, ks: &[usize]) -> Vec<Tensor> {
        let layers = self.backbone.layers().len();
        tch::no_grad(|| {
            let mut out = Vec::with_capacity(ks.len());
            let mut x = xs.shallow_clone();
            let mut done = 0;
            for &k in ks {
                while done < k.min(layers) {
                    x = self.backbone.forward_layer(done, &x, Mode::Infer);
                    done += 1;
                }
                out.push(if k >= layers { self.finish(&x) } else { x.shallow_clone() });
            }
            out
        })
    }

    /// The logits for `x` = [`Classifier::frozen_prefix`]`(images, start)`.
    pub(crate) fn forward_cached(
        &self,
        x: &Tensor,
        start: usize,
        frozen: usize,
        bn: BatchNormPolicy,
        train: bool,
    ) -> Tensor {
        if start >= self.backbone.layers().len() {
            self.head(x, train)
        } else {
            self.head(&self.features_from(x, start, frozen, bn, train), train)
        }
    }

    /// The logits in inference mode, without autograd (evaluation and prediction).
    pub(crate) fn infer(&self, xs: &Tensor) -> Tensor {
        self.infer_from(xs, 0)
    }

    /// [`Classifier::infer`] for `x` = [`Classifier::frozen_prefix`]`(images, start)`:
    /// [`Classifier::forward_cached`] with every layer frozen, so every layer runs in
    /// [`Mode::Infer`].
    pub(crate) fn infer_from(&self, x: &Tensor, start: usize) -> Tensor {
        let layers = self.backbone.layers().len();
        tch::no_grad(|| self.forward_cached(x, start, layers, BatchNormPolicy::AllFrozen, false))
    }

    pub fn head(&self, features: &Tensor, train: bool) -> Tensor {
        let mut x = features.shallow_clone();
        for layer in &self.hidden {
            x = x.dropout(self.dropout, train).apply(layer).relu();
        }
        x.dropout(self.dropout, train).apply(&self.fc)
    }

    pub fn forward(&self, xs: &Tensor, frozen: usize, bn: BatchNormPolicy, train: bool) -> Tensor {
        self.head(&self.features(xs, frozen, bn, train), train)
    }
}

/// A new linear layer of the head, its weights initialised as `init` says.
fn head_linear(p: nn::Path, fan_in: i64, out: i64, init: HeadInit) -> nn::Linear {
    let ws_init = match init {
        HeadInit::Pytorch => {
            let bound = 1.0 / (fan_in as f64).sqrt();
            nn::Init::Uniform { lo: -bound, up: bound }
        }
        HeadInit::Kaiming => nn::init::DEFAULT_KAIMING_UNIFORM,
    };
    nn::linear(p, fan_in, out, nn::LinearConfig { ws_init, ..Default::default() })
}

/// Parameter count of the variables whose names start with one of `prefixes`
/// (trainable parameters only: BatchNorm running statistics are not counted).
pub fn parameter_count(vs: &nn::VarStore, prefixes: &[String]) -> i64 {
    vs.variables()
        .iter()
        .filter(|(name, t)| t.requires_grad() && prefixes.iter().any(|p| has_prefix(name, p)))
        .map(|(_, t)| t.numel() as i64)
        .sum()
}

/// `name` is `prefix` itself or lies under it (`_blocks.1.x` is under `_blocks.1`, not `_blocks.10`).
pub fn has_prefix(name: &str, prefix: &str) -> bool {
    name == prefix || name.strip_prefix(prefix).is_some_and(|rest| rest.starts_with('.'))
}

/// The activation after a convolution and its BatchNorm.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Act {
    None,
    Relu,
    Relu6,
    Silu,
    Hardswish,
}

/// torchvision's `Conv2dNormActivation`: a `k` x `k` convolution without bias (padding
/// (k - 1) / 2), BatchNorm (folded into the convolution in inference, see [`conv_bn`]) and
/// an activation.
pub(crate) struct ConvBnAct {
    conv: nn::Conv2D,
    bn: nn::BatchNorm,
    eps: f64,
    stride: i64,
    padding: i64,
    groups: i64,
    act: Act,
}

impl ConvBnAct {
    /// The convolution's variables under `conv`, the BatchNorm's under `bn`.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        conv: nn::Path,
        bn: nn::Path,
        (cin, cout): (i64, i64),
        k: i64,
        stride: i64,
        groups: i64,
        bn_cfg: nn::BatchNormConfig,
        act: Act,
    ) -> Self {
        let padding = (k - 1) / 2;
        let cfg = nn::ConvConfig { stride, padding, groups, bias: false, ..Default::default() };
        let eps = bn_cfg.eps;
        let (conv, bn) = (nn::conv2d(conv, cin, cout, k, cfg), nn::batch_norm2d(bn, cout, bn_cfg));
        ConvBnAct { conv, bn, eps, stride, padding, groups, act }
    }

    pub(crate) fn forward(&self, xs: &Tensor, mode: Mode) -> Tensor {
        let p = self.padding;
        let mut x = conv_bn(xs, &self.conv, &self.bn, self.eps, self.stride, [p, p], self.groups, mode);
        match self.act {
            Act::None => x,
            Act::Relu => x.relu(),
            Act::Relu6 => {
                // In place: BatchNorm's backward needs its input, not its output.
                let _ = x.relu6_();
                x
            }
            Act::Silu => x.silu(),
            Act::Hardswish => x.hardswish(),
        }
    }
}

/// The gate of a squeeze-and-excitation block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Gate {
    Sigmoid,
    Hardsigmoid,
}

/// torchvision's `SqueezeExcitation`: global average pooling, `fc1` (a 1x1 convolution down
/// to `squeeze` channels), an activation, `fc2` back up, the gate; the input scaled by it.
pub(crate) struct SqueezeExcite {
    fc1: nn::Conv2D,
    fc2: nn::Conv2D,
    act: Act,
    gate: Gate,
}

impl SqueezeExcite {
    pub(crate) fn new(p: nn::Path, channels: i64, squeeze: i64, act: Act, gate: Gate) -> Self {
        let fc1 = nn::conv2d(&p / "fc1", channels, squeeze, 1, Default::default());
        let fc2 = nn::conv2d(&p / "fc2", squeeze, channels, 1, Default::default());
        SqueezeExcite { fc1, fc2, act, gate }
    }

    pub(crate) fn forward(&self, x: &Tensor) -> Tensor {
        let s = x.adaptive_avg_pool2d([1, 1]).apply(&self.fc1);
        let s = match self.act {
            Act::None => s,
            Act::Relu => s.relu(),
            Act::Relu6 => s.relu6(),
            Act::Silu => s.silu(),
            Act::Hardswish => s.hardswish(),
        };
        let s = s.apply(&self.fc2);
        let gate = match self.gate {
            Gate::Sigmoid => s.sigmoid(),
            Gate::Hardsigmoid => s.hardsigmoid(),
        };
        // Out of place: the product's backward needs x as it was.
        x * gate
    }
}

/// Convolution `conv` (with the given stride, padding and groups; it keeps no copy of
/// them) followed by BatchNorm `bn` (epsilon `eps`), in `mode`. In [`Mode::Infer`] the
/// BatchNorm is folded into the convolution: weights w * g / sqrt(v + eps) and bias
/// beta + (b - m) * g / sqrt(v + eps), with m and v its running statistics. One pass
/// over the activations instead of two; the result equals conv-then-BatchNorm up to
/// float rounding.
#[allow(clippy::too_many_arguments)]
pub(crate) fn conv_bn(
    xs: &Tensor,
    conv: &nn::Conv2D,
    bn: &nn::BatchNorm,
    eps: f64,
    stride: i64,
    padding: [i64; 2],
    groups: i64,
    mode: Mode,
) -> Tensor {
    let stride = [stride, stride];
    if mode != Mode::Infer {
        return xs.conv2d(&conv.ws, conv.bs.as_ref(), stride, padding, [1, 1], groups).apply_t(bn, mode.train());
    }
    let mut scale = (&bn.running_var + eps).rsqrt();
    if let Some(gamma) = &bn.ws {
        scale *= gamma;
    }
    let mut shift = match &conv.bs {
        Some(b) => (b - &bn.running_mean) * &scale,
        None => -(&bn.running_mean * &scale),
    };
    if let Some(beta) = &bn.bs {
        shift += beta;
    }
    let weight = &conv.ws * scale.view([-1, 1, 1, 1]);
    xs.conv2d(&weight, Some(&shift), stride, padding, [1, 1], groups)
}

/// Shared TensorFlow-style "same" padding: pads so that the output is ceil(input / stride),
/// putting the odd pixel at the bottom/right as TensorFlow does.
pub(crate) fn same_pad(xs: &Tensor, kernel: i64, stride: i64) -> Tensor {
    let (h, w) = (xs.size()[2], xs.size()[3]);
    let pad = |n: i64| ((n + stride - 1) / stride - 1) * stride + kernel - n;
    let (ph, pw) = (pad(h).max(0), pad(w).max(0));
    if ph == 0 && pw == 0 {
        return xs.shallow_clone();
    }
    let padded = xs.constant_pad_nd([pw / 2, pw - pw / 2, ph / 2, ph - ph / 2]);
    // The pad comes out in standard layout; a channels-last input stays channels-last.
    let strides = xs.stride();
    if xs.size()[1] > 1 && strides[1] == 1 { channels_last(&padded) } else { padded }
}

/// The same values with NHWC memory under the NCHW shape (PyTorch's `channels_last`),
/// by the permute + contiguous trick; tensors that are not 4-D are returned as they are.
pub(crate) fn channels_last(x: &Tensor) -> Tensor {
    if x.dim() != 4 {
        return x.shallow_clone();
    }
    x.permute([0, 2, 3, 1]).contiguous().permute([0, 3, 1, 2])
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::Kind;

    #[test]
    fn prefix_matching_respects_dots() {
        assert!(has_prefix("_blocks.1._bn0.weight", "_blocks.1"));
        assert!(!has_prefix("_blocks.10._bn0.weight", "_blocks.1"));
        assert!(has_prefix("_fc", "_fc"));
    }

    #[test]
    fn same_padding_matches_tensorflow() {
        let x = Tensor::zeros([1, 1, 96, 96], (Kind::Float, tch::Device::Cpu));
        // stride 2, kernel 3 on an even input: one pixel, bottom/right.
        assert_eq!(same_pad(&x, 3, 2).size(), vec![1, 1, 97, 97]);
        // stride 1, kernel 5: two each side.
        assert_eq!(same_pad(&x, 5, 1).size(), vec![1, 1, 100, 100]);
        let odd = Tensor::zeros([1, 1, 25, 25], (Kind::Float, tch::Device::Cpu));
        // stride 2, kernel 5 on an odd input: 4 in all, 2 each side.
        assert_eq!(same_pad(&odd, 5, 2).size(), vec![1, 1, 29, 29]);
    }

    /// BatchNorm running statistics and affine parameters far from their initial 0/1, so
    /// that folding them into the convolutions has something to get wrong. A BatchNorm is
    /// whatever has a `running_mean`, whatever the backbone calls it.
    fn randomise_batchnorm(vs: &nn::VarStore) {
        tch::manual_seed(3);
        let vars = vs.variables();
        let batchnorms: Vec<&str> = vars.keys().filter_map(|n| n.strip_suffix(".running_mean")).collect();
        assert!(!batchnorms.is_empty(), "no BatchNorm to randomise");
        tch::no_grad(|| {
            for bn in batchnorms {
                for (field, low, width) in
                    [("running_mean", -0.5, 1.0), ("running_var", 0.5, 2.0), ("weight", 0.5, 1.0), ("bias", -0.5, 1.0)]
                {
                    let mut t = vars[&format!("{bn}.{field}")].shallow_clone();
                    let r = Tensor::rand(t.size(), (Kind::Float, t.device())) * width + low;
                    t.copy_(&r);
                }
            }
        });
    }

    #[test]
    fn conv_bn_folding_equals_conv_then_batchnorm() {
        let vs = nn::VarStore::new(tch::Device::Cpu);
        let p = vs.root();
        for (groups, bias) in [(1, false), (8, false), (1, true)] {
            let cfg = nn::ConvConfig { stride: 2, groups, bias, ..Default::default() };
            let conv = nn::conv2d(&p / format!("conv{groups}{bias}"), 8, 16, 3, cfg);
            let bn = nn::batch_norm2d(
                &p / format!("bn{groups}{bias}"),
                16,
                nn::BatchNormConfig { eps: 1e-3, ..Default::default() },
            );
            randomise_batchnorm(&vs);
            let x = Tensor::randn([2, 8, 11, 11], (Kind::Float, tch::Device::Cpu));
            let plain = tch::no_grad(|| conv_bn(&x, &conv, &bn, 1e-3, 2, [1, 1], groups, Mode::Eval));
            let folded = tch::no_grad(|| conv_bn(&x, &conv, &bn, 1e-3, 2, [1, 1], groups, Mode::Infer));
            assert_eq!(plain.size(), vec![2, 16, 6, 6]);
            let diff = (&plain - &folded).abs().max().double_value(&[]);
            assert!(diff < 1e-5, "groups {groups}, bias {bias}: folded differs by {diff}");
            assert!(plain.abs().max().double_value(&[]) > 0.1, "a test that compares zeros proves nothing");
        }
    }

    #[test]
    fn inference_equals_the_eval_forward_for_every_folding_backbone() {
        for kind in Backbone::ALL {
            let vs = nn::VarStore::new(tch::Device::Cpu);
            let model = Classifier::new(kind, &vs.root(), 5, 0.2);
            if !model.backbone.layers().iter().any(|l| l.has_batchnorm) {
                continue; // LayerNorm only: nothing folds.
            }
            randomise_batchnorm(&vs);
            // In float64, so that 40 unnormalised layers' float32 rounding does not hide a
            // folding error: the two paths must agree to 1e-9.
            let mut vs = vs;
            vs.double();
            let x = Tensor::randn([2, 3, 32, 32], (Kind::Double, tch::Device::Cpu));
            let eval = tch::no_grad(|| model.forward(&x, 0, BatchNormPolicy::AllFrozen, false));
            let infer = model.infer(&x);
            let scale = eval.abs().max().double_value(&[]);
            let diff = (&eval - &infer).abs().max().double_value(&[]);
            assert!(scale > 1e-3, "{kind}: logits all but zero");
            assert!(diff <= 1e-9 * scale.max(1.0), "{kind}: inference differs by {diff} (logits up to {scale})");
        }
    }

    #[test]
    fn names_round_trip() {
        for b in Backbone::ALL {
            assert_eq!(Backbone::from_name(b.name()), Some(b));
            // A spec names it as `runner layers` and the README do.
            assert_eq!(serde_json::to_string(&b).unwrap(), format!("\"{}\"", b.name()));
        }
    }

    #[test]
    fn the_head_starts_as_torch_nn_linear_does() {
        let fixture: serde_json::Value =
            serde_json::from_str(include_str!("../../tests/fixtures/toolkit.json")).expect("toolkit.json is JSON");
        let case = &fixture["head_init"];
        let fan_in = case["fan_in"].as_i64().unwrap();
        let stats = |init| {
            tch::manual_seed(0);
            let vs = nn::VarStore::new(tch::Device::Cpu);
            let w = head_linear(vs.root() / "fc", fan_in, 10, init).ws;
            (f64::try_from(w.abs().max()).unwrap(), f64::try_from(w.std(true)).unwrap())
        };
        // Uniform in +-bound: its maximum just under the bound, its spread bound / sqrt(3), as PyTorch's.
        let (bound, torch_std) = (case["bound"].as_f64().unwrap(), case["std"].as_f64().unwrap());
        let (max, std) = stats(HeadInit::Pytorch);
        assert!(max <= bound && max > 0.99 * bound, "{max} vs bound {bound}");
        assert!((std / torch_std - 1.0).abs() < 0.03, "std {std} vs PyTorch's {torch_std}");
        // tch's Kaiming init is sqrt(6) times wider.
        let (kmax, kstd) = stats(HeadInit::Kaiming);
        assert!(kmax > 2.4 * bound && (kstd / std - 6f64.sqrt()).abs() < 0.1, "{kmax} {kstd}");
    }
}
