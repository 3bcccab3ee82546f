"""Weights of the thesis' PyTorch models <-> our Flax NNX model (`python -m shg_jax.convert`
is the command).

`from_thesis_state_dict(state, config)` builds our model from a mapping of PyTorch
state-dict keys to arrays (the thesis' 1-stack model, 430 entries, optionally with its
autoencoder, 16 entries: as one mapping with the `SHG_model.` / `AE_model.` prefixes of the
thesis' combined model, or as two mappings); `to_thesis_state_dict(model)` is its inverse.
Layouts: conv kernels OIHW -> HWIO; transposed-conv kernels as PyTorch stores them
(in, out, kh, kw) -> a forward kernel (kh, kw, in, out) flipped in space, since a stride-1
transposed convolution is a correlation with the flipped kernel; linear weights transposed;
BatchNorm weight/bias/running_mean/running_var -> scale/bias/mean/var; num_batches_tracked is
accepted and ignored (written back as 0). Every key must be used exactly once.
`write_checkpoint` saves a model as a run every command opens.
"""

from __future__ import annotations

import pathlib

import jax
import numpy as np
from flax import nnx

from shg_jax.errors import UserError
from shg_jax.models import StackedHourglass, build_model

SHG_PREFIX, AE_PREFIX = "SHG_model.", "AE_model."
_LEAF = {"kernel": "weight", "bias": "bias", "scale": "weight", "mean": "running_mean",
         "var": "running_var"}
_HEAD = ("last_res", "last_conv_1", "bn_last", "last_conv_2")
#: The thesis' mean RGB of its training images, in [0, 1] (what its weights expect).
THESIS_MEAN_RGB = (0.4103, 0.3741, 0.3536)


class ConversionError(UserError, ValueError):
    pass


def _torch_key(path: tuple) -> tuple[str, str, str]:
    """Our state path -> (which dict: 'shg' | 'ae', PyTorch key, layer kind)."""
    *module, leaf = [str(p) for p in path]
    name = _LEAF[leaf]
    if module[0] == "hourglasses" and module[2] == "autoencoder":
        part = module[3]
        if part in ("encoder", "decoder"):
            kind = "conv_transpose" if part == "decoder" else "conv"
            return "ae", f"{part}.{2 * int(module[4])}.{name}", kind
        return "ae", f"{part}.0.{name}", "linear"
    if module[0] == "heads":
        module = module[2:]                      # heads.0.last_res... -> last_res...
    elif module[0] == "merges":
        raise ConversionError("the thesis' models have one stack; n_stacks must be 1")
    return "shg", ".".join(module + [name]), "conv"


def _to_ours(array: np.ndarray, kind: str) -> np.ndarray:
    if array.ndim == 4:
        if kind == "conv_transpose":             # (in, out, kh, kw) -> flipped (kh, kw, in, out)
            return np.ascontiguousarray(array.transpose(2, 3, 0, 1)[::-1, ::-1])
        return np.ascontiguousarray(array.transpose(2, 3, 1, 0))        # OIHW -> HWIO
    if array.ndim == 2:
        return np.ascontiguousarray(array.T)
    return array


def _to_torch(array: np.ndarray, kind: str) -> np.ndarray:
    if array.ndim == 4:
        if kind == "conv_transpose":
            return np.ascontiguousarray(array[::-1, ::-1].transpose(2, 3, 0, 1))
        return np.ascontiguousarray(array.transpose(3, 2, 0, 1))
    if array.ndim == 2:
        return np.ascontiguousarray(array.T)
    return array


def _leaves(model: StackedHourglass) -> list[tuple[tuple, jax.Array]]:
    """(path, array) of every parameter and BatchNorm statistic."""
    state = nnx.state(model, (nnx.Param, nnx.BatchStat))
    return [(path, var[...]) for path, var in nnx.to_flat_state(state)]


def split_combined(state: dict) -> tuple[dict, dict | None]:
    """One mapping with SHG_model./AE_model. prefixes -> (shg, ae); otherwise (state, None)."""
    if not any(k.startswith(SHG_PREFIX) for k in state):
        return dict(state), None
    shg = {k[len(SHG_PREFIX):]: v for k, v in state.items() if k.startswith(SHG_PREFIX)}
    ae = {k[len(AE_PREFIX):]: v for k, v in state.items() if k.startswith(AE_PREFIX)}
    other = sorted(k for k in state if not k.startswith((SHG_PREFIX, AE_PREFIX)))
    if other:
        raise ConversionError(f"keys without the {SHG_PREFIX}/{AE_PREFIX} prefix: {other}")
    return shg, ae or None


def from_thesis_state_dict(state: dict, config, autoencoder: dict | None = None
                           ) -> StackedHourglass:
    """PyTorch state dict(s) -> our model (built from `config.model`) holding those weights."""
    shg, ae = split_combined(state)
    ae = autoencoder if autoencoder is not None else ae
    dicts = {"shg": shg, "ae": ae or {}}
    model = build_model(config.model)
    used = {"shg": set(), "ae": set()}
    missing, shapes, new = [], [], []
    for path, leaf in _leaves(model):
        which, key, kind = _torch_key(path)
        used[which].add(key)
        if key not in dicts[which]:
            missing.append(f"{'AE: ' if which == 'ae' else ''}{key}")
            continue
        value = _to_ours(np.asarray(dicts[which][key]), kind)
        if value.shape != leaf.shape:
            shapes.append(f"{key}: got {tuple(np.shape(dicts[which][key]))}, expected "
                          f"{tuple(_to_torch(np.zeros(leaf.shape), kind).shape)}")
        new.append((path, value.astype(leaf.dtype)))
    unexpected = [f"{'AE: ' if w == 'ae' else ''}{k}" for w, d in dicts.items() for k in d
                  if k not in used[w] and not k.endswith("num_batches_tracked")]
    problems = []
    if missing:
        problems.append(f"missing keys: {missing}")
    if unexpected:
        problems.append(f"unexpected keys: {unexpected}")
    if shapes:
        problems.append(f"shape mismatches: {shapes}")
    if problems:
        raise ConversionError("; ".join(problems))
    nnx.update(model, nnx.from_flat_state(new))
    return model


def to_thesis_state_dict(model: StackedHourglass, *, combined: bool = False) -> dict:
    """Our model -> PyTorch state dict(s) with NumPy arrays: the SHG mapping, or with an
    autoencoder either (shg, ae) or, with `combined`, one prefixed mapping."""
    out = {"shg": {}, "ae": {}}
    for path, leaf in _leaves(model):
        which, key, kind = _torch_key(path)
        out[which][key] = _to_torch(np.asarray(leaf), kind)
        if key.endswith("running_var"):
            out[which][key[:-len("running_var")] + "num_batches_tracked"] = np.array(0, np.int64)
    if not out["ae"]:
        return out["shg"]
    if combined:
        return {**{SHG_PREFIX + k: v for k, v in out["shg"].items()},
                **{AE_PREFIX + k: v for k, v in out["ae"].items()}}
    return out["shg"], out["ae"]


def load_state_dict(path) -> dict:
    """A .npz (one array per key) or, when torch is installed, a .pth state dict."""
    path = pathlib.Path(path)
    if not path.is_file():
        raise ConversionError(f"state dict not found: {path}")
    if path.suffix == ".npz":
        with np.load(path, allow_pickle=False) as f:
            return {k: f[k] for k in f.files}
    if path.suffix in (".pth", ".pt"):
        try:
            import torch
        except ImportError:
            raise ConversionError(f"reading {path} needs PyTorch, which is not installed; "
                                  f"write an .npz instead (see the README)") from None
        state = torch.load(path, map_location="cpu")
        state = state.get("state_dict", state.get("model_state_dict", state))
        return {k: v.detach().cpu().numpy() for k, v in state.items()}
    raise ConversionError(f"{path}: expected a .npz or .pth file")


def write_checkpoint(model: StackedHourglass, config, workdir, mean_rgb) -> None:
    """Saves the converted model as the `latest` and `best` checkpoints of a fresh run, so
    evaluate, predict and the analyses open it like a trained one."""
    from shg_jax import fileio
    from shg_jax.bookkeeping import config_json
    from shg_jax.checkpoint import Checkpoints, RunRecord
    from shg_jax.schedule import PlateauSchedule
    from shg_jax.steps import Steps

    steps = Steps(config, mean_rgb)
    state = steps.init_state()
    state = state._replace(params=jax.device_put(nnx.state(model, nnx.Param),
                                                 jax.tree.leaves(state.params)[0].sharding),
                           batch_stats=jax.device_put(nnx.state(model, nnx.BatchStat),
                                                      jax.tree.leaves(
                                                          state.batch_stats)[0].sharding))
    record = RunRecord(config=config_json(config),
                       schedule=PlateauSchedule.from_config(config).to_dict(),
                       mean_rgb=[float(m) for m in mean_rgb], label_offset_x=0.0,
                       converted_from="thesis PyTorch")
    workdir = pathlib.Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    ckpts = Checkpoints(workdir)
    ckpts.save(state, record)
    ckpts.wait()
    fileio.write_json(workdir / "config.json", record.config)
