"""The knobs of the train, evaluate and export stages: top-level ``seed``, ``lr``, ``epochs``,
``batch_size`` (top level as in the design card: ``dvc exp run -S lr=0.01``) and sections ``model``,
``train`` and ``evaluate``."""

from __future__ import annotations

from dataclasses import dataclass

from handsigns.params import build, knob, read_params


@dataclass(frozen=True)
class ModelParams:
    image_size: int = knob(64, lo=8, hi=1024, doc="images are resized to image_size x image_size")
    num_channels: int = knob(32, lo=1, hi=1024, doc="channels of the first conv; then 2x and 4x")
    batchnorm: bool = knob(True, doc="batch norm after each conv and fc1 (CS230); false = the notes' Net")
    dropout: float = knob(0.3, lo=0, hi=1, doc="dropout after fc1; 0 = the notes' Net")

    def __post_init__(self) -> None:
        if self.dropout >= 1:
            from handsigns.errors import UserError

            raise UserError(f"params.yaml: model.dropout = {self.dropout!r} is out of range; it must be < 1")


@dataclass(frozen=True)
class TrainParams:
    optimizer: str = knob("adamw", choices=("sgd", "adam", "adamw"))
    momentum: float = knob(0.9, lo=0, hi=1, doc="sgd only")
    weight_decay: float = knob(5e-4, lo=0)
    schedule: str = knob("onecycle", choices=("none", "onecycle", "cosine"))
    label_smoothing: float = knob(0.0, lo=0, hi=1)
    patience: int = knob(0, lo=0, doc="stop after this many epochs without a better val result "
                                      "(accuracy, then loss); 0 = never")
    augment: bool = knob(True, doc="per-sample random scale/crop, rotation and colour jitter on train batches")
    flip: bool = knob(False, doc="random horizontal flips (a hand sign's mirror image shows the same count)")
    max_rotation: float = knob(10.0, lo=0, hi=180, doc="degrees")
    min_scale: float = knob(0.9, lo=0.1, hi=1, doc="random zoom in to this fraction of the side")
    max_shift: float = knob(0.05, lo=0, hi=0.5, doc="random translation, fraction of the side")
    color_jitter: float = knob(0.2, lo=0, hi=1, doc="brightness/contrast/saturation factors in [1-j, 1+j]")
    device: str = knob("auto", doc="auto (cuda, then mps, then cpu), cpu, cuda, cuda:N or mps")
    precision: str = knob("auto", choices=("auto", "fp32", "bf16", "fp16"),
                          doc="autocast; auto = bf16 on GPUs that support it, else fp32")
    deterministic: bool = knob(False, doc="torch deterministic algorithms on GPU (always on for CPU)")


@dataclass(frozen=True)
class EvalParams:
    batch_size: int = knob(256, lo=1, doc="images per forward pass in the evaluate stage (memory only)")


@dataclass(frozen=True)
class Hyper:
    """Everything the model half reads from params.yaml."""

    seed: int = knob(0, lo=0, hi=2**32 - 1)
    lr: float = knob(3e-3, lo=0, lo_open=True)
    epochs: int = knob(60, lo=1, hi=100_000)
    batch_size: int = knob(32, lo=1, hi=65_536)
    model: ModelParams = ModelParams()
    train: TrainParams = TrainParams()
    evaluate: EvalParams = EvalParams()


TOP_LEVEL_SECTIONS = ("data", "ci")  # read by other stages; accepted here, validated there


def load_hyper(path: str = "params.yaml") -> Hyper:
    raw = read_params(path)
    return build(Hyper, {k: v for k, v in raw.items() if k not in TOP_LEVEL_SECTIONS})
