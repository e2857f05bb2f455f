//! RegNetY-800MF (Radosavovic et al. 2020), torchvision's layout and variable names:
//! `stem` (3x3 convolution, stride 2, 32 wide), `trunk_output.blockS.blockS-J` (residual
//! bottleneck blocks: `proj` where the shape changes, `f.a` 1x1, `f.b` 3x3 grouped with
//! 16 channels a group and the stage's stride, `f.se` squeeze-and-excitation down to a
//! quarter of the block's input width, `f.c` 1x1 without activation, ReLU after the sum);
//! the new head replaces `fc`.
//!
//! Flat layer list: 0 = stem, then one entry per block (1 + 3 + 8 + 2).

use tch::Tensor;
use tch::nn;

use super::{Act, ConvBnAct, Gate, LayerInfo, Mode, Network, SqueezeExcite};

/// torchvision's RegNet BatchNorm: eps 1e-5, momentum 0.1.
const BN_EPS: f64 = 1e-5;
const STEM: i64 = 32;
const GROUP_WIDTH: i64 = 16;
const SE_RATIO: f64 = 0.25;

/// RegNetY-800MF's stages as torchvision derives them from its (depth 14, w0 56, wa 38.84,
/// wm 2.4) parameters: (width, blocks); each stage starts with stride 2.
const Y_800MF: [(i64, usize); 4] = [(64, 1), (144, 3), (320, 8), (784, 2)];

/// A convolution (`p.0`), BatchNorm (`p.1`) and an activation.
fn conv(p: nn::Path, (cin, cout): (i64, i64), k: i64, stride: i64, groups: i64, act: Act) -> ConvBnAct {
    let bn = nn::BatchNormConfig { eps: BN_EPS, ..Default::default() };
    ConvBnAct::new(&p / 0, &p / 1, (cin, cout), k, stride, groups, bn, act)
}

/// torchvision's `ResBottleneckBlock` (bottleneck multiplier 1).
struct Block {
    proj: Option<ConvBnAct>,
    a: ConvBnAct,
    b: ConvBnAct,
    se: SqueezeExcite,
    c: ConvBnAct,
}

impl Block {
    fn new(p: nn::Path, (cin, cout): (i64, i64), stride: i64) -> Self {
        let f = &p / "f";
        let proj = (cin != cout || stride != 1).then(|| conv(&p / "proj", (cin, cout), 1, stride, 1, Act::None));
        let squeeze = (SE_RATIO * cin as f64).round() as i64;
        Block {
            proj,
            a: conv(&f / "a", (cin, cout), 1, 1, 1, Act::Relu),
            b: conv(&f / "b", (cout, cout), 3, stride, cout / GROUP_WIDTH, Act::Relu),
            se: SqueezeExcite::new(&f / "se", cout, squeeze, Act::Relu, Gate::Sigmoid),
            c: conv(&f / "c", (cout, cout), 1, 1, 1, Act::None),
        }
    }

    fn forward(&self, xs: &Tensor, mode: Mode) -> Tensor {
        let x = self.a.forward(xs, mode);
        let x = self.b.forward(&x, mode);
        let x = self.c.forward(&self.se.forward(&x), mode);
        let shortcut = match &self.proj {
            Some(p) => p.forward(xs, mode),
            None => xs.shallow_clone(),
        };
        (shortcut + x).relu()
    }
}

pub(crate) struct RegNet {
    stem: ConvBnAct,
    blocks: Vec<Block>,
    info: Vec<LayerInfo>,
    width: i64,
}

impl RegNet {
    pub(crate) fn y_800mf(p: &nn::Path) -> Self {
        let stem = conv(p / "stem", (3, STEM), 3, 2, 1, Act::Relu);
        let mut info = vec![LayerInfo { prefixes: vec!["stem".into()], name: "stem".into(), has_batchnorm: true }];
        let (mut blocks, mut cin) = (vec![], STEM);
        for (s, &(width, depth)) in Y_800MF.iter().enumerate() {
            let stage = p / "trunk_output" / format!("block{}", s + 1);
            for j in 0..depth {
                let name = format!("block{}-{j}", s + 1);
                blocks.push(Block::new(&stage / name.as_str(), (cin, width), if j == 0 { 2 } else { 1 }));
                info.push(LayerInfo {
                    prefixes: vec![format!("trunk_output.block{}.{name}", s + 1)],
                    name: format!("stage {} block {j}", s + 1),
                    has_batchnorm: true,
                });
                cin = width;
            }
        }
        RegNet { stem, blocks, info, width: cin }
    }
}

impl Network for RegNet {
    fn layers(&self) -> &[LayerInfo] {
        &self.info
    }

    fn forward_layer(&self, index: usize, xs: &Tensor, mode: Mode) -> Tensor {
        match index {
            0 => self.stem.forward(xs, mode),
            i => self.blocks[i - 1].forward(xs, mode),
        }
    }

    fn feature_dim(&self) -> i64 {
        self.width
    }
}
