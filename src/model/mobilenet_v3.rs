//! MobileNetV3 (Howard et al. 2019), small and large, torchvision's layout and variable
//! names: `features.N` (stem, inverted residual blocks with optional squeeze-and-excitation
//! `fc1`/`fc2`, the last 1x1 convolution) and `classifier.0` (the hidden Linear after
//! pooling, with Hardswish; torchvision's dropout and `classifier.3` are what the new head
//! replaces).
//!
//! Flat layer list: torchvision's `features` modules one by one, then "head linear"
//! (pooling, `classifier.0` and Hardswish): the backbone's output is already a vector.

use tch::Tensor;
use tch::nn;

use super::{Act, ConvBnAct, Gate, LayerInfo, Mode, Network, SqueezeExcite};

/// torchvision's BatchNorm for MobileNetV3: eps 0.001, momentum 0.01.
const BN_EPS: f64 = 1e-3;
const BN_MOMENTUM: f64 = 0.01;

/// (input, kernel, expanded, output, squeeze-excitation, Hardswish, stride): torchvision's table.
type Setting = (i64, i64, i64, i64, bool, bool, i64);

const LARGE: [Setting; 15] = [
    (16, 3, 16, 16, false, false, 1),
    (16, 3, 64, 24, false, false, 2),
    (24, 3, 72, 24, false, false, 1),
    (24, 5, 72, 40, true, false, 2),
    (40, 5, 120, 40, true, false, 1),
    (40, 5, 120, 40, true, false, 1),
    (40, 3, 240, 80, false, true, 2),
    (80, 3, 200, 80, false, true, 1),
    (80, 3, 184, 80, false, true, 1),
    (80, 3, 184, 80, false, true, 1),
    (80, 3, 480, 112, true, true, 1),
    (112, 3, 672, 112, true, true, 1),
    (112, 5, 672, 160, true, true, 2),
    (160, 5, 960, 160, true, true, 1),
    (160, 5, 960, 160, true, true, 1),
];

const SMALL: [Setting; 11] = [
    (16, 3, 16, 16, true, false, 2),
    (16, 3, 72, 24, false, false, 2),
    (24, 3, 88, 24, false, false, 1),
    (24, 5, 96, 40, true, true, 2),
    (40, 5, 240, 40, true, true, 1),
    (40, 5, 240, 40, true, true, 1),
    (40, 5, 120, 48, true, true, 1),
    (48, 5, 144, 48, true, true, 1),
    (48, 5, 288, 96, true, true, 2),
    (96, 5, 576, 96, true, true, 1),
    (96, 5, 576, 96, true, true, 1),
];

/// torchvision's `_make_divisible(v, 8)`.
fn divisible(v: i64) -> i64 {
    let new = (v + 4) / 8 * 8;
    let new = new.max(8);
    if (new as f64) < 0.9 * v as f64 { new + 8 } else { new }
}

/// A convolution (`p.0`), BatchNorm (`p.1`) and an activation.
fn conv(p: nn::Path, (cin, cout): (i64, i64), k: i64, stride: i64, groups: i64, act: Act) -> ConvBnAct {
    let bn = nn::BatchNormConfig { eps: BN_EPS, momentum: BN_MOMENTUM, ..Default::default() };
    ConvBnAct::new(&p / 0, &p / 1, (cin, cout), k, stride, groups, bn, act)
}

struct Block {
    expand: Option<ConvBnAct>,
    depthwise: ConvBnAct,
    se: Option<SqueezeExcite>,
    project: ConvBnAct,
    residual: bool,
}

impl Block {
    fn new(p: nn::Path, s: Setting) -> Self {
        let (cin, k, exp, cout, se, hs, stride) = s;
        let act = if hs { Act::Hardswish } else { Act::Relu };
        let b = &p / "block";
        let mut j = 0;
        let expand = (exp != cin).then(|| {
            j += 1;
            conv(&b / 0, (cin, exp), 1, 1, 1, act)
        });
        let depthwise = conv(&b / j, (exp, exp), k, stride, exp, act);
        j += 1;
        let se = se.then(|| {
            let squeeze = divisible(exp / 4);
            let at = &b / j;
            j += 1;
            SqueezeExcite::new(at, exp, squeeze, Act::Relu, Gate::Hardsigmoid)
        });
        let project = conv(&b / j, (exp, cout), 1, 1, 1, Act::None);
        Block { expand, depthwise, se, project, residual: stride == 1 && cin == cout }
    }

    fn forward(&self, xs: &Tensor, mode: Mode) -> Tensor {
        let mut x = match &self.expand {
            Some(e) => e.forward(xs, mode),
            None => xs.shallow_clone(),
        };
        x = self.depthwise.forward(&x, mode);
        if let Some(se) = &self.se {
            x = se.forward(&x);
        }
        x = self.project.forward(&x, mode);
        if self.residual { x + xs } else { x }
    }
}

enum Layer {
    Conv(Box<ConvBnAct>),
    Block(Box<Block>),
    /// Pooling, `classifier.0` and Hardswish.
    HeadLinear(nn::Linear),
}

pub(crate) struct MobileNetV3 {
    layers: Vec<Layer>,
    info: Vec<LayerInfo>,
    width: i64,
}

impl MobileNetV3 {
    pub(crate) fn large(p: &nn::Path) -> Self {
        Self::new(p, &LARGE, 1280)
    }

    pub fn small(p: &nn::Path) -> Self {
        Self::new(p, &SMALL, 1024)
    }

    fn new(p: &nn::Path, settings: &[Setting], width: i64) -> Self {
        let f = p / "features";
        let mut layers = vec![Layer::Conv(Box::new(conv(&f / 0, (3, 16), 3, 2, 1, Act::Hardswish)))];
        for (i, &s) in settings.iter().enumerate() {
            layers.push(Layer::Block(Box::new(Block::new(&f / (i + 1), s))));
        }
        let last_in = settings[settings.len() - 1].3;
        let last = settings.len() + 1;
        layers.push(Layer::Conv(Box::new(conv(&f / last, (last_in, 6 * last_in), 1, 1, 1, Act::Hardswish))));
        layers.push(Layer::HeadLinear(nn::linear(p / "classifier" / 0, 6 * last_in, width, Default::default())));
        let info = (0..layers.len())
            .map(|i| {
                let (prefix, name) = match i {
                    0 => ("features.0".to_string(), "stem".to_string()),
                    i if i == last => (format!("features.{i}"), "last conv".to_string()),
                    i if i == last + 1 => ("classifier.0".to_string(), "head linear".to_string()),
                    i => (format!("features.{i}"), format!("block {}", i - 1)),
                };
                LayerInfo { prefixes: vec![prefix], name, has_batchnorm: i <= last }
            })
            .collect();
        MobileNetV3 { layers, info, width }
    }
}

impl Network for MobileNetV3 {
    fn layers(&self) -> &[LayerInfo] {
        &self.info
    }

    fn forward_layer(&self, index: usize, xs: &Tensor, mode: Mode) -> Tensor {
        match &self.layers[index] {
            Layer::Conv(c) => c.forward(xs, mode),
            Layer::Block(b) => b.forward(xs, mode),
            Layer::HeadLinear(l) => xs.adaptive_avg_pool2d([1, 1]).flatten(1, -1).apply(l).hardswish(),
        }
    }

    fn feature_dim(&self) -> i64 {
        self.width
    }

    fn pooled(&self) -> bool {
        false
    }
}
