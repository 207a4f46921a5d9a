"""Config boundary: every bad value is a ConfigError naming the file, the dotted key, the value and what is
allowed; good configs round-trip; overrides are validated like file values; YAML never builds objects."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from gnnpipe.config import (
    ConfigError,
    ExperimentConfig,
    config_fields,
    config_from_dict,
    config_to_dict,
    config_to_yaml,
    explain,
    load_config,
    parse_overrides,
)

REPO_ROOT = Path(__file__).resolve().parents[1]
SHIPPED = sorted((REPO_ROOT / "experiments" / "configs").glob("*.yaml"))
CORA_GCN2 = REPO_ROOT / "experiments" / "configs" / "cora_gcn2.yaml"


def _write(tmp_path: Path, text: str, name: str = "exp.yaml") -> Path:
    p = tmp_path / name
    p.write_text(text)
    return p


def _error(path: Path, overrides: list[str] | None = None) -> str:
    with pytest.raises(ConfigError) as info:
        load_config(path, overrides)
    return str(info.value)


# (yaml text, dotted key, the bad value as the message shows it, a fragment of what is allowed)
BAD = {
    "unknown section": ("bogus: {a: 1}\n", "bogus", "bogus", "dataset, model, parallel, train, log"),
    "unknown key": ("model: {layerz: 3}\n", "model.layerz", "layerz", "arch, layers, hidden"),
    "string for int": ("model: {layers: abc}\n", "model.layers", "'abc'", "an integer"),
    "bool for int": ("model: {layers: true}\n", "model.layers", "True", "an integer"),
    "float for int": ("train: {epochs: 10.5}\n", "train.epochs", "10.5", "an integer"),
    "string for float": ("train: {lr: fast}\n", "train.lr", "'fast'", "a number"),
    "string for bool": ("log: {trace: maybe}\n", "log.trace", "'maybe'", "true or false"),
    "int for string": ("dataset: {name: 7}\n", "dataset.name", "7", "a string"),
    "wrong type for stage_split": ("parallel: {stage_split: 3}\n", "parallel.stage_split", "3", "list[int]"),
    "bad arch": ("model: {arch: gat}\n", "model.arch", "'gat'", "gcn | sage | gcnii | resgcn"),
    "bad chunk_order": ("parallel: {chunk_order: zigzag}\n", "parallel.chunk_order", "'zigzag'", "random | fixed"),
    "bad dtype": ("train: {dtype: float16}\n", "train.dtype", "'float16'", "float32 | float64"),
    "bad device": ("train: {device: tpu}\n", "train.device", "'tpu'", "cpu | cuda"),
    "chunks not divisible by ways": (
        "parallel: {ways: 2, chunks: 3}\n",
        "parallel.chunks",
        "3",
        "a multiple of parallel.ways (2)",
    ),
    "stages > layers": (
        "model: {layers: 2}\nparallel: {stages: 3}\n",
        "parallel.stages",
        "3",
        "at most model.layers (2)",
    ),
    "stage_split wrong length": (
        "model: {layers: 4}\nparallel: {stages: 2, stage_split: [1, 1, 2]}\n",
        "parallel.stage_split",
        "[1, 1, 2]",
        "a list of 2 positive layer counts summing to model.layers (4)",
    ),
    "stage_split wrong sum": (
        "model: {layers: 4}\nparallel: {stages: 2, stage_split: [1, 2]}\n",
        "parallel.stage_split",
        "[1, 2]",
        "summing to model.layers (4)",
    ),
    "stage_split zero stage": (
        "model: {layers: 4}\nparallel: {stages: 2, stage_split: [0, 4]}\n",
        "parallel.stage_split",
        "[0, 4]",
        "positive layer counts",
    ),
    "stage_split bad word": (
        "parallel: {stage_split: balanced}\n",
        "parallel.stage_split",
        "'balanced'",
        "equal | cost | a list of int",
    ),
    "log.tensorbord (unknown key)": ("log: {tensorbord: true}\n", "log.tensorbord", "tensorbord", "tensorboard"),
    "string for log.tensorboard": ("log: {tensorboard: maybe}\n", "log.tensorboard", "'maybe'", "true"),
    "string for recompute": ("parallel: {recompute: yes please}\n", "parallel.recompute", "'yes please'", "true"),
    "negative lr": ("train: {lr: -0.01}\n", "train.lr", "-0.01", "> 0"),
    "nan lr": ("train: {lr: .nan}\n", "train.lr", "nan", "a finite number > 0"),
    "inf weight_decay": ("train: {weight_decay: .inf}\n", "train.weight_decay", "inf", "a finite number >= 0"),
    "dropout 1": ("model: {dropout: 1.0}\n", "model.dropout", "1.0", "[0, 1)"),
    "negative dropout": ("model: {dropout: -0.1}\n", "model.dropout", "-0.1", "[0, 1)"),
    "zero layers": ("model: {layers: 0}\n", "model.layers", "0", ">= 1"),
    "zero epochs": ("train: {epochs: 0}\n", "train.epochs", "0", ">= 1"),
    "unknown dataset": ("dataset: {name: imagenet}\n", "dataset.name", "'imagenet'", "cora | citeseer"),
    "bare ogbn- prefix": ("dataset: {name: ogbn-}\n", "dataset.name", "'ogbn-'", "ogbn-<name>"),
    "binary without path": ("dataset: {name: binary}\n", "dataset.path", "None", "a path to the binary dataset"),
    "npz without path": ("dataset: {name: npz}\n", "dataset.path", "None", "a path to the npz dataset"),
    "bad partition": ("parallel: {partition: spectral}\n", "parallel.partition", "'spectral'", "metis | metis_kway"),
    "momentum 1": ("parallel: {history_momentum: 1.0}\n", "parallel.history_momentum", "1.0", "[0, 1)"),
}


@pytest.mark.parametrize("text, key, value, allowed", list(BAD.values()), ids=list(BAD))
def test_bad_config_names_file_key_value_and_allowed(tmp_path, text, key, value, allowed):
    path = _write(tmp_path, text)
    msg = _error(path)
    assert str(path) in msg
    assert key in msg
    assert value in msg
    assert allowed in msg
    assert "\n" not in msg.strip(), "one line, for the CLI"


def test_section_not_a_mapping(tmp_path):
    path = _write(tmp_path, "model: 3\n")
    msg = _error(path)
    assert str(path) in msg and "'model'" in msg and "must be a mapping" in msg and "3" in msg


@pytest.mark.parametrize("text", ["- a\n- b\n", "just a string\n", "42\n"])
def test_top_level_not_a_mapping(tmp_path, text):
    path = _write(tmp_path, text)
    msg = _error(path)
    assert str(path) in msg and "top level must be a mapping" in msg


def test_invalid_yaml(tmp_path):
    path = _write(tmp_path, "model: {layers: 2\ntrain: [\n")
    msg = _error(path)
    assert str(path) in msg and "not valid YAML" in msg


def test_missing_file(tmp_path):
    path = tmp_path / "nope.yaml"
    msg = _error(path)
    assert str(path) in msg and "not found" in msg


def test_directory_is_not_a_config(tmp_path):
    assert "is a directory; expected a YAML config file" in _error(tmp_path)


@pytest.mark.parametrize("data", [{1: {}, "bogus": {}}, {"model": {1: 2, "arch": "gcn"}}], ids=["section", "key"])
def test_non_string_keys_are_config_errors(data):
    # mixed key types once crashed sorting the unknown keys (TypeError, a traceback in the CLI)
    with pytest.raises(ConfigError, match="unknown"):
        config_from_dict(data, "x.yaml")


def test_empty_file_gives_defaults(tmp_path):
    cfg = load_config(_write(tmp_path, "# nothing\n"))
    assert cfg == ExperimentConfig()
    assert load_config(None) == ExperimentConfig()


def test_exponent_floats_are_numbers(tmp_path):
    # PyYAML's YAML 1.1 rules read 1e-3 as a string; the loader reads it as a number like YAML 1.2
    cfg = load_config(_write(tmp_path, "train: {lr: 1e-3, weight_decay: 5E-4}\nmodel: {lam: 1.5e+0}\n"))
    assert cfg.train.lr == 1e-3 and cfg.train.weight_decay == 5e-4 and cfg.model.lam == 1.5
    assert load_config(None, ["train.lr=1e-3"]).train.lr == 1e-3
    msg = _error(_write(tmp_path, "train: {epochs: 1e3}\n", "e.yaml"))
    assert "train.epochs" in msg and "1000.0" in msg and "integer" in msg


# ---------------------------------------------------------------------------------------------- safe YAML
def test_python_tags_are_refused_not_executed(tmp_path):
    marker = tmp_path / "pwned"
    path = _write(tmp_path, f'model: !!python/object/apply:os.system ["touch {marker}"]\n')
    msg = _error(path)
    assert str(path) in msg and "not valid YAML" in msg
    assert not marker.exists()
    path = _write(tmp_path, "model: !!python/object:gnnpipe.config.ModelConfig {layers: 3}\n", "obj.yaml")
    assert "not valid YAML" in _error(path)


def test_python_tags_in_overrides_are_refused(tmp_path):
    marker = tmp_path / "pwned"
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(None, [f"dataset.path=!!python/object/apply:os.system ['touch {marker}']"])
    assert not marker.exists()


# ---------------------------------------------------------------------------------------------- round trip
def test_round_trip_of_a_non_default_config():
    data = {
        "dataset": {"name": "binary", "path": "/data/reddit", "feature_norm": True, "undirected": False},
        "model": {"arch": "resgcn", "layers": 8, "hidden": 32, "dropout": 0.2, "alpha": 0.3, "init": "pytorch"},
        "parallel": {"ways": 2, "stages": 4, "chunks": 8, "chunk_order": "degree", "stage_split": [1, 2, 3, 2]},
        "train": {"epochs": 7, "lr": 1.0e-3, "eval_every": 2, "seed": 5, "dtype": "float64"},
        "log": {"dir": "elsewhere", "trace": True},
    }
    cfg = config_from_dict(data, "a.yaml")
    d = config_to_dict(cfg)
    assert set(d) == {"dataset", "model", "parallel", "train", "log"}
    assert config_from_dict(d) == cfg
    assert config_from_dict(json.loads(json.dumps(d))) == cfg  # as the metrics JSON embeds it
    assert cfg.parallel.world_size == 8


@pytest.mark.parametrize("path", SHIPPED, ids=[p.name for p in SHIPPED])
def test_shipped_configs_load_and_round_trip(path):
    cfg = load_config(path)
    assert config_from_dict(config_to_dict(cfg)) == cfg


def test_there_are_shipped_configs():
    assert CORA_GCN2 in SHIPPED and len(SHIPPED) >= 2


# ---------------------------------------------------------------------------------------------- overrides
def test_override_is_parsed_as_int_and_applied():
    cfg = load_config(CORA_GCN2, ["model.layers=32", "train.lr=0.05", "log.trace=true", "dataset.path=null"])
    assert cfg.model.layers == 32 and type(cfg.model.layers) is int
    assert cfg.train.lr == 0.05 and cfg.log.trace is True and cfg.dataset.path is None
    assert cfg.model.arch == "gcn"  # the rest of the file's section is kept
    assert "overrides" in cfg.source


def test_parse_overrides_nests_by_section():
    assert parse_overrides(["model.layers=4", "model.arch=sage", "train.lr=0.5"]) == {
        "model": {"layers": 4, "arch": "sage"},
        "train": {"lr": 0.5},
    }


@pytest.mark.parametrize(
    "override, fragments",
    [
        ("model.layers=abc", ["model.layers", "'abc'", "integer"]),
        ("model.layers=0", ["model.layers", "0", ">= 1"]),
        ("model.arch=gat", ["model.arch", "'gat'", "gcn | sage"]),
        ("parallel.stages=3", ["parallel.stages", "3", "at most model.layers (2)"]),
        ("model.layerz=3", ["model.layerz", "allowed keys"]),
        ("modle.layers=3", ["modle", "allowed sections"]),
        ("model.layers", ["'model.layers'", "section.key=value"]),
        ("layers=3", ["'layers'", "section.key"]),
        ("model.layers.x=3", ["'model.layers.x'", "section.key"]),
        ("model.layers=[1", ["model.layers", "not valid YAML"]),
    ],
)
def test_bad_override_is_a_config_error_naming_the_key(override, fragments):
    with pytest.raises(ConfigError) as info:
        load_config(CORA_GCN2, [override])
    msg = str(info.value)
    for f in fragments:
        assert f in msg, (f, msg)


def test_override_of_a_file_error_still_names_the_file(tmp_path):
    path = _write(tmp_path, "model: {layers: 2}\n")
    msg = _error(path, ["train.dtype=half"])
    assert str(path) in msg and "train.dtype" in msg and "'half'" in msg


# ---------------------------------------------------------------------------------------------- self-description
FIELDS = config_fields()
CHOICE_FIELDS = [(key, f) for key, f, _ in FIELDS if f.metadata["choices"] is not None]


def _show(value) -> str:
    """A default as the explain table writes it (YAML spelling)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _section_data(key: str, value) -> dict:
    section, name = key.split(".")
    return {section: {name: value}}


def test_every_field_is_described():
    keys = [key for key, _, _ in FIELDS]
    assert len(keys) == len(set(keys))
    assert {k.split(".")[0] for k in keys} == {"dataset", "model", "parallel", "train", "log"}
    assert set(keys) == {f"{s}.{k}" for s, v in config_to_dict(ExperimentConfig()).items() for k in v}
    for key, f, _ in FIELDS:
        help_ = f.metadata["help"]
        assert isinstance(help_, str) and help_.strip() and "\n" not in help_, key


def test_choices_have_the_field_type_and_include_the_default():
    assert {k for k, _ in CHOICE_FIELDS} >= {"model.arch", "model.init", "parallel.chunk_order", "train.dtype"}
    for key, f in CHOICE_FIELDS:
        choices = f.metadata["choices"]
        assert isinstance(choices, tuple) and choices and len(set(choices)) == len(choices), key
        assert f.default in choices, key
        for choice in choices:  # every listed value is accepted, parsed as the field's type
            cfg = config_from_dict(_section_data(key, choice), "x.yaml")
            section, name = key.split(".")
            assert getattr(getattr(cfg, section), name) == choice


@pytest.mark.parametrize("key, f", CHOICE_FIELDS, ids=[k for k, _ in CHOICE_FIELDS])
def test_every_choice_field_is_validated_against_its_choices(key, f):
    with pytest.raises(ConfigError) as info:
        config_from_dict(_section_data(key, "not-a-choice"), "x.yaml")
    msg = str(info.value)
    assert "x.yaml" in msg and f"'{key}'" in msg and "'not-a-choice'" in msg
    choices = list(map(str, f.metadata["choices"]))
    allowed = msg.split("allowed: ", 1)[1].split(" | ")
    assert allowed[: len(choices)] == choices  # then only the list form of a field that also takes a list
    assert all(a.startswith("a list of ") for a in allowed[len(choices) :]), msg


def test_dataset_name_help_lists_every_loader():
    from gnnpipe.data import DATASET_NAMES

    help_ = dict((k, f) for k, f, _ in FIELDS)["dataset.name"].metadata["help"]
    assert all(name in help_ for name in DATASET_NAMES) and "ogbn-<name>" in help_


def test_explain_lists_every_key_with_type_default_and_description():
    lines = explain().splitlines()
    header = lines[0]
    assert header.split() == ["key", "type", "allowed", "default", "description"]
    t, a, d, h = (header.index(word) for word in ("type", "allowed", "default", "description"))
    by_key = {line[:t].strip(): line for line in lines[1:]}
    assert list(by_key) == [key for key, _, _ in FIELDS]  # every key once, in file order
    for key, f, _ in FIELDS:
        line = by_key[key]  # aligned: every non-empty cell starts at its header's column
        assert line[t - 1] == " " and line[t] != " " and line[d] != " " and line[h] != " ", (key, line)
        assert line[d:h].strip() == _show(f.default), key
        assert line[h:] == f.metadata["help"], key
        choices, allowed = f.metadata["choices"], line[a:d].strip()
        if choices is None:
            assert allowed == "", key
        else:
            assert allowed.split(" | ")[: len(choices)] == list(map(str, choices)), key
    assert by_key["dataset.path"][t:a].strip() == "str | None"
    assert by_key["log.tensorboard"][t:a].strip() == "bool"
    assert by_key["parallel.stage_split"][a:d].strip() == "equal | cost | a list of int"
    assert by_key["model.arch"][a:d].strip() == "gcn | sage | gcnii | resgcn"


def test_recompute_defaults_off_and_round_trips():
    assert ExperimentConfig().parallel.recompute is False
    assert load_config(CORA_GCN2, ["parallel.recompute=true"]).parallel.recompute is True


def test_config_to_yaml_reads_back(tmp_path):
    cfg = load_config(CORA_GCN2, ["model.layers=4", "parallel.stages=2", "parallel.stage_split=[1, 3]"])
    text = config_to_yaml(cfg)
    again = load_config(_write(tmp_path, text))
    assert again == cfg and again.parallel.stage_split == [1, 3]


# ---------------------------------------------------------------------------------- file encoding, duplicate keys
@pytest.mark.parametrize(
    "data, fragment",
    [
        ("model: {arch: gcn}  # caf\u00e9\n".encode("latin-1"), "byte 0xe9 at offset 25, line 1"),
        ("model: {arch: gcn}\n".encode("utf-16"), "byte 0xff at offset 0"),
        (b"\x89PNG\r\n\x1a\n\x00\x00", "byte 0x89 at offset 0"),
    ],
    ids=["latin-1", "utf-16", "binary"],
)
def test_a_file_that_is_not_utf8_is_a_config_error(tmp_path, data, fragment):
    path = tmp_path / "exp.yaml"
    path.write_bytes(data)
    msg = _error(path)
    assert str(path) in msg and "not UTF-8" in msg and fragment in msg and "\n" not in msg


def test_utf8_with_bom_and_non_ascii_comments_load(tmp_path):
    path = tmp_path / "exp.yaml"
    path.write_bytes("\ufeff# caf\u00e9 \u2013 \u00fcber\nmodel: {arch: gcn}\n".encode())
    assert load_config(path).model.arch == "gcn"


@pytest.mark.parametrize(
    "text, key, lines",
    [
        ("model:\n  layers: 4\n  layers: 8\n", "model.layers", "lines 2 and 3"),
        ("model: {layers: 4, hidden: 8, layers: 8}\n", "model.layers", "lines 1 and 1"),
        ("model: {arch: gcn}\ntrain: {epochs: 3}\nmodel: {layers: 4}\n", "'model'", "lines 1 and 3"),
        ("parallel:\n  stage_split: [1, 2]\n  chunks: 4\n  chunks: 4\n", "parallel.chunks", "lines 3 and 4"),
    ],
    ids=["block", "flow", "section", "same value"],
)
def test_duplicate_keys_are_refused_naming_file_and_key(tmp_path, text, key, lines):
    path = _write(tmp_path, text)
    msg = _error(path)
    assert str(path) in msg and f"duplicate key '{key.strip(chr(39))}'" in msg and lines in msg and "\n" not in msg


def test_yaml_merge_keys_are_not_duplicates(tmp_path):
    text = "base: &b {layers: 4}\n"  # an unknown section, but only after parsing: no duplicate-key error
    path = _write(tmp_path, text + "model:\n  <<: *b\n  hidden: 8\n")
    assert "duplicate" not in _error(path)
