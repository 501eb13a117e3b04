"""The recipe: the knobs of the train, evaluate and export stages. Top-level ``seed``, ``lr``, ``epochs``,
``batch_size``, ``nproc`` (top level as in the design card: ``dvc exp run -S lr=0.01``) and sections ``model``,
``train``, ``dist``, ``evaluate`` and ``ood``."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from handsigns.errors import UserError
from handsigns.params import AUTO, Section, knob


@dataclass(frozen=True)
class ModelParams:
    arch: str = knob("net")
    weights: str | None = knob(None)
    weights_sha256: str | None = knob(None)
    image_size: int = knob(64, lo=8, hi=1024)
    num_channels: int | str = knob(AUTO, lo=1, hi=1024, auto=True)
    batchnorm: bool = knob(True)
    dropout: float | str = knob(AUTO, lo=0, hi=1, auto=True)

    def __post_init__(self) -> None:
        if not isinstance(self.dropout, str) and self.dropout >= 1:  # the one string allowed is auto
            raise UserError(f"params.yaml: model.dropout = {self.dropout!r} is out of range; it must be < 1")


@dataclass(frozen=True)
class TrainParams:
    optimizer: str = knob("adamw", choices=("sgd", "adam", "adamw"))
    momentum: float = knob(0.9, lo=0, hi=1)
    weight_decay: float | str = knob(AUTO, lo=0, auto=True)
    schedule: str = knob("onecycle", choices=("none", "onecycle", "cosine"))
    label_smoothing: float = knob(0.1, lo=0, hi=1)
    min_steps: int = knob(500, lo=0, hi=10_000_000)
    steps_factor: float | str = knob(AUTO, lo=1, hi=100, auto=True)
    patience: int = knob(0, lo=0)
    augment: bool = knob(True)
    flip: bool = knob(False)
    max_rotation: float | str = knob(AUTO, lo=0, hi=180, auto=True)
    min_scale: float | str = knob(AUTO, lo=0.1, hi=1, auto=True)
    max_shift: float | str = knob(AUTO, lo=0, hi=0.5, auto=True)
    color_jitter: float = knob(0.2, lo=0, hi=1)
    hue: float = knob(0.0, lo=0, hi=0.5)
    erase: float | str = knob(AUTO, lo=0, hi=1, auto=True)
    mixup: float = knob(0.0, lo=0, hi=10)
    cutmix: float = knob(0.0, lo=0, hi=10)
    device: str = knob("auto")
    precision: str = knob("auto", choices=("auto", "fp32", "bf16", "fp16"))
    tf32: bool = knob(False)
    deterministic: bool = knob(False)
    compile: bool = knob(False)
    init_from: str | None = knob(None)
    init_from_sha256: str | None = knob(None)
    freeze_epochs: int = knob(0, lo=0)
    backbone_lr_scale: float = knob(1.0, lo=0, hi=1)


@dataclass(frozen=True)
class DistParams:
    nnodes: int = knob(1, lo=1, hi=100_000)
    rdzv_endpoint: str = knob("")


@dataclass(frozen=True)
class EvalParams:
    batch_size: int = knob(256, lo=1)


@dataclass(frozen=True)
class OodParams:
    check: bool = knob(True)
    max_val_flagged: float = knob(0.05, lo=0, hi=0.5, lo_open=True)


@dataclass(frozen=True)
class RecipeParams(Section):
    """Everything the model half reads from params.yaml: the top level, less the other stages' sections."""

    SECTION: ClassVar[None] = None
    OTHER_SECTIONS: ClassVar[tuple[str, ...]] = ("data", "memory", "ci")  # accepted here, validated by their stages

    seed: int = knob(0, lo=0, hi=2**32 - 1)
    lr: float = knob(3e-3, lo=0, lo_open=True)
    epochs: int = knob(20, lo=1, hi=100_000)
    batch_size: int = knob(32, lo=1, hi=65_536)
    nproc: int = knob(1, lo=1, hi=1024)
    model: ModelParams = ModelParams()
    train: TrainParams = TrainParams()
    dist: DistParams = DistParams()
    evaluate: EvalParams = EvalParams()
    ood: OodParams = OodParams()

    @property
    def world_size(self) -> int:
        return self.nproc * self.dist.nnodes

    def __post_init__(self) -> None:
        if self.model.weights and self.train.init_from:
            raise UserError("params.yaml: model.weights and train.init_from both name starting weights; set one")
        if self.batch_size % self.world_size:
            raise UserError(
                f"params.yaml: batch_size = {self.batch_size} does not split evenly over {self.world_size} processes "
                f"(nproc x dist.nnodes); batch_size is the global batch: make it a multiple of {self.world_size}"
            )
