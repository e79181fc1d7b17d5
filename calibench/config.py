"""benchmark.toml + command-line flags -> validated run specs.

Settings files layer: the packaged benchmark.toml holds the defaults, and a user's file
(./benchmark.toml or ``--config FILE``) is merged on top of it table by table, key by key (a
table merges into a table; a list or a scalar replaces), so a user's file holds only what it
changes. Within the merged settings, later layers win: ``[training]`` (the RankMixup CIFAR
protocol, docs/protocol.md, "Training") < ``[datasets.<name>]`` (the dataset's own protocol,
default backbone and method hyperparameters) < ``[presets.<name>]`` < command-line flags.
Learning-rate milestones are fractions of the epoch count, so ``--epochs`` rescales the schedule.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from itertools import product
from pathlib import Path
from typing import Any

from calibench.errors import CalibenchError
from calibench.registry import DATASETS, METHODS
from calibench.settings import check_values
from calibench.spec import DATA_KEYS, SEED_RANGE, TRAINING_KEYS, RunSpec, Training

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

CONFIG_NAME = "benchmark.toml"
DEFAULT_CONFIG = Path(__file__).resolve().parent / CONFIG_NAME
"""The packaged default settings; ``calibench init`` copies them to ./benchmark.toml."""

TABLES = ("datasets", "plugins", "presets", "slurm", "training")
"""The tables of a settings file; besides them it may hold only ``default_preset``."""
PRESET_KEYS = {"description", "methods", "datasets", "backbones", "seeds", "ood", "vary"}
DATASET_KEYS = {"backbone", "description", *DATA_KEYS}
SECTION_KEYS = {"presets": PRESET_KEYS | {"hparams"}, "datasets": DATASET_KEYS | {"hparams"}}
"""The keys of a ``[presets.<name>]`` / ``[datasets.<name>]`` table besides training settings."""


@dataclass
class Overrides:
    """What the command line asks for; None means "as the preset says"."""

    preset: str | None = None
    methods: list[str] | None = None
    datasets: list[str] | None = None
    backbones: list[str] | None = None
    seeds: list[int] | None = None
    epochs: int | None = None
    ood: list[str] | None = None
    sets: list[str] = field(default_factory=list)
    data_root: str | None = None
    download: bool = False
    device: str = "auto"


def find_config(path: Path | None = None) -> Path:
    """The user's settings file, found as pytest and ruff find theirs: ``path`` (``--config``)
    if given, else ./benchmark.toml in the working directory, else the packaged defaults."""
    if path is not None:
        if not Path(path).is_file():
            raise CalibenchError(
                f"config file {str(path)!r} does not exist. Give an existing benchmark.toml, "
                "or run `calibench init` to write a copy of the defaults."
            )
        return Path(path)
    local = Path.cwd() / CONFIG_NAME
    return local if local.is_file() else DEFAULT_CONFIG


def config_files(path: Path) -> list[Path]:
    """The files whose settings :func:`load_config` layers, lowest first: the packaged defaults,
    then ``path`` unless it is that same file."""
    if Path(path).resolve() == DEFAULT_CONFIG.resolve():
        return [DEFAULT_CONFIG]
    return [DEFAULT_CONFIG, Path(path)]


def read_toml(path: Path) -> dict[str, Any]:
    """Parse one settings file, turning every way it can be unreadable into one clear message."""
    try:
        with open(path, "rb") as fh:
            return tomllib.load(fh)
    except tomllib.TOMLDecodeError as exc:
        raise CalibenchError(f"{path} is not valid TOML: {exc}. Fix the file and retry.") from None
    except UnicodeDecodeError as exc:
        raise CalibenchError(
            f"{path} is not UTF-8 text (byte {exc.start} cannot be decoded). TOML files are "
            "UTF-8: save it with that encoding and retry."
        ) from None
    except RecursionError:
        raise CalibenchError(f"{path} nests arrays or tables too deeply to read.") from None
    except OSError as exc:
        raise CalibenchError(f"cannot read {path}: {exc.strerror}.") from None


def _unknown(keys: Any, valid: set[str]) -> str:
    return ", ".join(repr(k) for k in sorted(set(keys) - valid))


def _check_sections(config: dict[str, Any], path: Path) -> None:
    """Every ``[presets.<name>]`` and ``[datasets.<name>]`` is a table of known keys."""
    training = ", ".join(sorted(TRAINING_KEYS))
    for section, keys in SECTION_KEYS.items():
        for name, table in config.get(section, {}).items():
            if not isinstance(table, dict):
                raise CalibenchError(f"{path}: [{section}.{name}] must be a table.")
            unknown = _unknown(table, keys | TRAINING_KEYS)
            if unknown:
                raise CalibenchError(
                    f"{path}: [{section}.{name}] has unknown settings {unknown}. Valid: "
                    f"{', '.join(sorted(keys))}, or a training setting ({training})."
                )


def check_layout(config: dict[str, Any], path: Path) -> None:
    """The names of one settings file: known top-level tables of known keys, each a table."""
    unknown = _unknown(config, {"default_preset", *TABLES})
    if unknown:
        tables = ", ".join(f"[{t}]" for t in TABLES)
        raise CalibenchError(
            f"{path}: unknown top-level names {unknown}. Valid: {tables} and default_preset."
        )
    for key in TABLES:
        if key in config and not isinstance(config[key], dict):
            raise CalibenchError(f"{path}: [{key}] must be a table.")
    for table, valid in (("training", TRAINING_KEYS), ("plugins", {"paths"})):
        unknown = _unknown(config.get(table, {}), valid)
        if unknown:
            raise CalibenchError(
                f"{path}: [{table}] has unknown settings {unknown}. "
                f"Valid: {', '.join(sorted(valid))}."
            )
    _check_sections(config, path)


def merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    """``over`` layered on ``base``: tables merge key by key, recursively; any other value of
    ``over`` (a list, a scalar) replaces the one in ``base``."""
    out = dict(base)
    for key, value in over.items():
        below = out.get(key)
        out[key] = (
            merge(below, value) if isinstance(below, dict) and isinstance(value, dict) else value
        )
    return out


def _own_plugin_paths(config: dict[str, Any], path: Path) -> None:
    """Make ``[plugins] paths`` absolute, relative to the folder of the file that names them."""
    if config.get("plugins", {}).get("paths"):
        config["plugins"]["paths"] = [str(p) for p in plugin_dirs(config, path)]


def load_config(path: Path) -> dict[str, Any]:
    """The settings of ``path`` layered on the packaged defaults (:func:`config_files`), each
    file parsed and its names checked on its own, so a message names the file at fault."""
    config: dict[str, Any] = {}
    for file in config_files(path):
        layer = read_toml(file)
        check_layout(layer, file)
        _own_plugin_paths(layer, file)
        for name, table in layer.get("datasets", {}).items():
            if "format" in table:
                from calibench.data import register_from_settings

                register_from_settings(name, table, file)
        config = merge(config, layer)
    return config


def plugin_dirs(config: dict[str, Any], config_path: Path) -> list[Path]:
    """``[plugins] paths`` of the config; a relative one is relative to ``config_path``'s folder
    (:func:`load_config` has made those of its files absolute)."""
    paths = config.get("plugins", {}).get("paths", [])
    if not isinstance(paths, list) or not all(isinstance(p, str) for p in paths):
        raise CalibenchError(f"{config_path}: [plugins] paths must be a list of folder names.")
    return [config_path.parent / Path(p).expanduser() for p in paths]


def _parse_value(raw: str) -> list[Any]:
    """One ``--set`` value -> its alternatives: a TOML literal is one value; a comma-separated
    list of literals (``1,2,4`` or ``logit,prob``) is a grid of values."""
    try:
        return [tomllib.loads(f"v = {raw}")["v"]]
    except tomllib.TOMLDecodeError:
        pass
    values = []
    for part in raw.split(","):
        part = part.strip()
        try:
            values.append(tomllib.loads(f"v = {part}")["v"])
        except tomllib.TOMLDecodeError:
            values.append(part)
    return values


def parse_sets(items: list[str]) -> dict[str, dict[str, list[Any]]]:
    """``NAME.PARAM=VALUE`` strings -> {NAME: {PARAM: [values]}}. Values are TOML literals
    (``5``, ``0.1``, ``true``, ``"prob"``, ``[0.3, 0.6]``), a bare word is a string, and a
    comma-separated list (``1,2,4``) is a grid: the run specs are the product of every grid."""
    out: dict[str, dict[str, list[Any]]] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        name, dot, param = key.strip().partition(".")
        if not sep or not dot or not name or not param or not raw.strip():
            raise CalibenchError(
                f"--set {item!r} is not NAME.PARAM=VALUE (e.g. --set rankmixup_mrl.margin=1.0 "
                "or --set training.lr=0.05; a grid: --set rankmixup_mrl.margin=0.5,1,2)."
            )
        values = _parse_value(raw.strip())
        if any(v == "" for v in values):
            raise CalibenchError(f"--set {item!r} has an empty value in its list.")
        out.setdefault(name, {})[param] = values
    return out


def grid(choices: dict[str, list[Any]]) -> list[dict[str, Any]]:
    """Every combination of ``{name: [values]}`` as a list of ``{name: value}`` dicts."""
    names = list(choices)
    return [dict(zip(names, combo, strict=True)) for combo in product(*choices.values())]


def _str_list(value: Any, where: str) -> list[str]:
    if isinstance(value, str):
        value = [v for v in value.split(",") if v]
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise CalibenchError(f"{where} must be a list of names.")
    return value


def expand_methods(names: list[str]) -> list[str]:
    """Method names, with shell-style patterns (``*``, ``rankmixup_*``) expanded."""
    from calibench.method import list_methods

    out: list[str] = []
    for name in names:
        if any(c in name for c in "*?["):
            matches = list_methods(name)
            if not matches:
                raise CalibenchError(
                    f"the pattern {name!r} matches no method. Methods: {', '.join(list_methods())}."
                )
        else:
            METHODS.get(name)
            matches = [name]
        out.extend(m for m in matches if m not in out)
    return out


def _training(layers: list[tuple[str, dict[str, Any]]]) -> Training:
    """The training settings of the layers, later layers winning; every bad value of every
    layer is one message naming the layer."""
    values: dict[str, Any] = {}
    problems: list[str] = []
    for where, layer in layers:
        unknown = _unknown(layer, TRAINING_KEYS)
        if unknown:
            raise CalibenchError(
                f"{where}: unknown training setting {unknown}. "
                f"Valid: {', '.join(sorted(TRAINING_KEYS))}."
            )
        coerced, bad = check_values(Training, layer.items(), f"{where}: training setting ")
        values.update(coerced)
        problems += bad
    if problems:
        raise CalibenchError("; ".join(problems) + ".")
    return Training(**values)


def _table(config: dict[str, Any], *keys: str) -> dict[str, Any]:
    node: Any = config
    for key in keys:
        node = node.get(key, {}) if isinstance(node, dict) else {}
    return node if isinstance(node, dict) else {}


def _split_layer(
    layer: dict[str, Any], skip: set[str], where: str
) -> tuple[dict[str, Any], dict[str, Any]]:
    """A dataset or preset table -> (training settings, {method: hparams})."""
    training = {k: v for k, v in layer.items() if k not in skip and k != "hparams"}
    hparams = layer.get("hparams", {})
    if not isinstance(hparams, dict) or not all(isinstance(v, dict) for v in hparams.values()):
        raise CalibenchError(f"{where}: hparams must hold one table per method.")
    for method in hparams:
        METHODS.get(method)
    return training, hparams


def _check_ood_shapes(datasets: list[str], ood: list[str]) -> None:
    """OOD test images must have the in-distribution images' channels and size."""
    for name in datasets:
        spec = DATASETS.get(name)
        for other in ood:
            o = DATASETS.get(other)
            if other == name:
                raise CalibenchError(f"--ood {other}: a dataset cannot be its own OOD set.")
            if (o.in_channels, o.image_size) != (spec.in_channels, spec.image_size):
                raise CalibenchError(
                    f"--ood {other}: its images are {o.in_channels}x{o.image_size}x{o.image_size}"
                    f", but {name}'s are {spec.in_channels}x{spec.image_size}x{spec.image_size}. "
                    "Pick an OOD set of the same shape (e.g. cifar10 vs svhn,cifar100)."
                )


def _preset(config: dict[str, Any], name: str | None) -> tuple[str, dict[str, Any]]:
    presets = _table(config, "presets")
    name = name or config.get("default_preset", "quick")
    if not isinstance(name, str) or name not in presets:
        raise CalibenchError(
            f"unknown preset {name!r}. Valid presets: {', '.join(sorted(presets)) or '(none)'}."
        )
    if not isinstance(presets[name], dict):
        raise CalibenchError(f"[presets.{name}] must be a table.")
    return name, presets[name]


def _check_dataset_tables(config: dict[str, Any]) -> None:
    for name, table in _table(config, "datasets").items():
        if not isinstance(table, dict):
            raise CalibenchError(f"[datasets.{name}] must be a table.")
        DATASETS.get(name)


def _seeds(overrides: Overrides, preset: dict[str, Any], where: str) -> list[int]:
    seeds, where = (
        (overrides.seeds, "--seeds")
        if overrides.seeds is not None
        else (preset.get("seeds", [0]), f"{where}: seeds")
    )
    if not isinstance(seeds, list) or not all(
        isinstance(s, int) and not isinstance(s, bool) and SEED_RANGE.holds(s) for s in seeds
    ):
        raise CalibenchError(
            f"{where} must be a list of integers {SEED_RANGE.rule()}, got {seeds!r}."
        )
    return seeds


def _vary(preset: dict[str, Any], where: str) -> dict[str, dict[str, list[Any]]]:
    """``[presets.<p>.vary.<method>] param = [values]``: an ablation, one parameter at a time."""
    vary = preset.get("vary", {})
    if not isinstance(vary, dict) or not all(
        isinstance(table, dict) and all(isinstance(v, list) and v for v in table.values())
        for table in vary.values()
    ):
        raise CalibenchError(f"{where}: vary must hold one table of non-empty lists per method.")
    for method in vary:
        METHODS.get(method)
    return vary


def variants(grid_choices: dict[str, list[Any]], vary: dict[str, list[Any]]) -> list[dict]:
    """A method's hyperparameter overrides: the product of its ``--set`` grid, and, for an
    ablation, each varied parameter's values one at a time (the others at their defaults)."""
    out = grid(grid_choices)
    for param, values in vary.items():
        out += [{param: value} for value in values if param not in grid_choices]
    return out


def _check_sets(sets: dict[str, Any], methods: list[str]) -> None:
    for name in sets:
        if name not in methods:
            raise CalibenchError(
                f"--set names method {name!r}, which is not in this run. Methods in this run: "
                f"{', '.join(methods)} (or use training.PARAM)."
            )


def _backbones(
    overrides: Overrides, preset: dict, ds_layer: dict, training: Training, where: str
) -> list[str]:
    from calibench.models import TIMM_PREFIX, check_backbone_name

    backbones = overrides.backbones or _str_list(
        preset.get("backbones", [ds_layer.get("backbone", "small_cnn")]), where
    )
    for backbone in backbones:
        check_backbone_name(backbone)
        if training.pretrained and not backbone.startswith(TIMM_PREFIX):
            raise CalibenchError(
                f"training.pretrained is set, but backbone {backbone!r} has no pretrained "
                "weights; only timm/<name> backbones can start from pretrained weights."
            )
    return backbones


def build_run_specs(config: dict[str, Any], overrides: Overrides) -> list[RunSpec]:
    """The run specs of a preset after command-line overrides, every name and value validated:
    the product of methods (x each method's ``--set`` grid) x datasets (x ``training.*`` grid)
    x backbones x seeds."""
    from calibench.method import get_method

    preset_name, preset = _preset(config, overrides.preset)
    _check_dataset_tables(config)
    where = f"preset {preset_name!r}"
    methods = expand_methods(overrides.methods or _str_list(preset.get("methods", ["*"]), where))
    datasets = overrides.datasets or _str_list(preset.get("datasets", ["digits"]), where)
    seeds = _seeds(overrides, preset, where)
    ood = overrides.ood if overrides.ood is not None else _str_list(preset.get("ood", []), where)
    for name in [*datasets, *ood]:
        DATASETS.get(name)
    _check_ood_shapes(datasets, ood)
    sets = parse_sets(overrides.sets)
    training_grid = sets.pop("training", {})
    if overrides.epochs is not None:
        training_grid["epochs"] = [overrides.epochs]
    _check_sets(sets, methods)
    pr_training, pr_hparams = _split_layer(preset, PRESET_KEYS, f"[presets.{preset_name}]")
    vary = _vary(preset, f"[presets.{preset_name}]")

    specs = []
    for dataset, cli_training in product(datasets, grid(training_grid)):
        ds_layer = _table(config, "datasets", dataset)
        ds_training, ds_hparams = _split_layer(ds_layer, DATASET_KEYS, f"[datasets.{dataset}]")
        training = _training(
            [
                ("[training]", _table(config, "training")),
                (f"[datasets.{dataset}]", ds_training),
                (f"[presets.{preset_name}]", pr_training),
                ("--set training / --epochs", cli_training),
            ]
        )
        backbones = _backbones(overrides, preset, ds_layer, training, where)
        for method in methods:
            base = {**ds_hparams.get(method, {}), **pr_hparams.get(method, {})}
            for cli_hparams in variants(sets.get(method, {}), vary.get(method, {})):
                hparams = get_method(method, **{**base, **cli_hparams}).hyperparameters()
                specs += [
                    RunSpec(
                        method=method,
                        dataset=dataset,
                        backbone=backbone,
                        seed=seed,
                        training=training,
                        hparams=hparams,
                        ood=tuple(ood),
                        data_root=overrides.data_root or "",
                        download=overrides.download,
                        device=overrides.device,
                    )
                    for backbone, seed in product(backbones, seeds)
                ]
    return list({spec.run_id: spec for spec in specs}.values())
