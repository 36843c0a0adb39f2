"""vitkit.cli.main: no torch before a command runs, user errors vs internal errors, "did you mean", exit codes."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from vitkit.cli import main as cli_main
from vitkit.errors import UnknownNameError, UserError, did_you_mean


def _fresh_python(code: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2] / "src")}
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)


def test_building_the_parser_imports_no_torch():
    # Measured through sys.modules, not time: `vitkit --help`/`--version` must not pay torch's 2-5 s import.
    r = _fresh_python("import sys, vitkit.cli.main as m; m.build_parser(); import vitkit; vitkit.__version__; "
                      "heavy = [k for k in ('torch', 'numpy', 'PIL', 'yaml', 'matplotlib') if k in sys.modules]; "
                      "print(heavy)")
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "[]"


def test_version_answers_without_importing_torch():
    r = _fresh_python("import sys; from vitkit.cli.main import main\n"
                      "try:\n    main(['--version'])\nexcept SystemExit as e:\n    print('exit', e.code)\n"
                      "print('torch' in sys.modules)")
    assert r.returncode == 0, r.stderr
    assert r.stdout.split()[-3:] == ["exit", "0", "False"] and "vitkit 0.1.0" in r.stdout


def test_lazy_public_names_still_work():
    import vitkit

    assert vitkit.create_model is vitkit.factory.create_model
    assert "load_model" in dir(vitkit)
    # only the public names (issue 29): not `importlib`, `Any`, `_LAZY` or the subpackages loaded so far
    assert dir(vitkit) == sorted(vitkit.__all__)
    for name in vitkit.__all__:  # each documented (`help(vitkit.list_models)` says what it lists)
        value = getattr(vitkit, name)
        assert isinstance(value, str) or (value.__doc__ or "").strip(), name
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        vitkit.nope  # noqa: B018


def test_did_you_mean():
    assert did_you_mean("ViT-B_61", ["ViT-B_16", "ViT-L_16", "R50+ViT-B_16"]).startswith(" (did you mean ViT-B_16")
    assert did_you_mean("zzzz", ["ViT-B_16"]) == ""
    assert did_you_mean("evl", ["eval", "export"]) == " (did you mean eval?)"


def test_unknown_model_name_suggests_and_does_not_list_everything():
    import vitkit

    with pytest.raises(UnknownNameError) as e:
        vitkit.create_model("ViT-B_61")
    msg = str(e.value)
    assert "did you mean ViT-B_16" in msg and "`vitkit models`" in msg
    assert msg.count(",") < 5  # not all 30 names on one line
    assert isinstance(e.value, KeyError) and isinstance(e.value, UserError)  # old `except KeyError` callers


def test_misspelled_option_command_and_choice(capsys):
    for argv, hint in [(["eval", "--modle", "x"], "did you mean --model?"), (["evl"], "did you mean eval?"),
                       (["eval", "--model", "m", "--data", "digits", "--precision", "bf61"], "did you mean bf16?")]:
        with pytest.raises(SystemExit) as e:
            cli_main.main(argv)
        assert e.value.code == 2
        assert hint in capsys.readouterr().err


def test_unknown_preset_suggests(capsys):
    assert cli_main.main(["train", "--preset", "defualt", "--list-options"]) == 2
    err = capsys.readouterr().err
    assert "unknown preset 'defualt' (did you mean default?)" in err and len(err.strip().splitlines()) == 1


def _fail_with(exc: BaseException):
    def run(args):
        raise exc
    return run


@pytest.mark.parametrize("exc", [UserError("bad --thing"), FileNotFoundError("no such file: x.npz")])
def test_user_errors_are_one_line_exit_2(exc, monkeypatch, capsys):
    monkeypatch.setattr(cli_main, "setup_logging", lambda args: None)
    parser = cli_main.build_parser()
    args = parser.parse_args(["models"])
    args.func = _fail_with(exc)
    monkeypatch.setattr(cli_main, "_parse", lambda p, argv: args)
    assert cli_main.main([]) == 2
    err = capsys.readouterr().err
    assert err.strip().splitlines() == [f"vitkit models: error: {exc}"]


@pytest.mark.parametrize("exc", [ValueError("shapes (3,) and (4,) not aligned"), KeyError("x"), TypeError("t")])
def test_internal_errors_show_a_short_traceback_and_ask_for_a_report(exc, monkeypatch, capsys):
    monkeypatch.delenv("VITKIT_DEBUG", raising=False)
    args = cli_main.build_parser().parse_args(["models"])
    args.func = _fail_with(exc)
    monkeypatch.setattr(cli_main, "_parse", lambda p, argv: args)
    assert cli_main.main([]) == 1
    err = capsys.readouterr().err
    assert "Traceback" in err and "internal error" in err and "report" in err and type(exc).__name__ in err
    monkeypatch.setenv("VITKIT_DEBUG", "1")
    with pytest.raises(type(exc)):
        cli_main.main([])


def test_missing_optional_package_names_the_extra(monkeypatch, capsys):
    args = cli_main.build_parser().parse_args(["models"])
    args.func = _fail_with(ModuleNotFoundError("No module named 'matplotlib'", name="matplotlib"))
    monkeypatch.setattr(cli_main, "_parse", lambda p, argv: args)
    assert cli_main.main([]) == 2
    assert "pip install 'vitkit[analysis]'" in capsys.readouterr().err


def test_models_filter_without_match_exits_non_zero(capsys):
    assert cli_main.main(["models", "--filter", "zzz"]) == 2
    assert "no model name contains it" in capsys.readouterr().err
    assert cli_main.main(["models", "--pretrained", "--filter", "zzz"]) == 2
