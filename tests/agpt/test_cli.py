import pytest

from agpt.cli import build_parser


@pytest.mark.parametrize(
    "argv",
    [
        ["--profile", "cpu-small-448", "bench", "model"],
        ["bench", "model", "--profile", "cpu-small-448"],
        ["--profile", "cpu-small-448", "bench", "model", "--seconds", "3"],
    ],
)
def test_common_options_are_accepted_before_and_after_the_subcommand(argv):
    args = build_parser().parse_args(argv)
    assert args.profile == "cpu-small-448"


def test_every_command_of_the_issue_exists():
    parser = build_parser()
    for argv in (["demo"], ["ingest", "dir", "--product", "p"], ["worker"], ["dashboard"],
                 ["eval", "--data", "d"], ["db", "upgrade"], ["bench", "model"],
                 ["data", "synth", "--out", "o"], ["chat", "i.png", "--product", "p",
                 "--refs", "r"], ["model", "check", "--llm", "d"], ["pool", "list",
                 "--product", "p"]):
        assert callable(parser.parse_args(argv).func)


def test_unknown_profile_is_a_clear_error():
    from inference.profiles import get_profile

    with pytest.raises(ValueError, match="known: anomalygpt-7b, cpu-small, cpu-small-448"):
        get_profile("gpu-huge")


def test_model_check_reports_problems_with_exit_code_1(tmp_path, capsys):
    import torch

    from agpt.cli import main

    broken = tmp_path / "anomalygpt.pt"
    torch.save({"image_decoder.fc.0.weight": torch.zeros(3, 3)}, broken)
    assert main(["model", "check", "--anomalygpt", str(broken)]) == 1
    out = capsys.readouterr().out
    assert "image_decoder.fc.0.weight" in out or "missing" in out
    assert main(["model", "check"]) == 2
