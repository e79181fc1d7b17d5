"""Every dataset a command needs is read before the first run trains: a missing set costs
seconds and leaves nothing behind (one message, exit 2)."""

from __future__ import annotations

from fake_datasets import write_fake_cifar10

from calibench.cli import main


def test_a_missing_ood_set_stops_the_run_before_training(tmp_path, capsys, bypass_md5):
    write_fake_cifar10(tmp_path / "data")
    out = tmp_path / "out"
    argv = ["run", "--datasets", "cifar10", "--methods", "ce", "--ood", "svhn", "--data-root"]
    assert main([*argv, str(tmp_path / "data"), "--output", str(out), "--device", "cpu"]) == 2
    err = capsys.readouterr().err
    assert "dataset 'svhn' not found" in err and "train_32x32.mat" in err
    assert "Traceback" not in err
    assert not out.exists() and not list(tmp_path.rglob("log.csv"))


def test_a_missing_training_set_stops_the_sweep_before_any_run(tmp_path, capsys):
    out = tmp_path / "out"
    argv = ["run", "--methods", "ce", "--datasets", "digits,cifar10", "--epochs", "1"]
    argv += ["--data-root", str(tmp_path / "empty"), "--output", str(out), "--device", "cpu"]
    assert main(argv) == 2
    assert "dataset 'cifar10' not found" in capsys.readouterr().err
    assert not out.exists()


def test_a_missing_ood_set_stops_a_checkpoint_evaluation(tmp_path, capsys):
    argv = ["evaluate", "--checkpoint", str(tmp_path / "w.pt"), "--backbone", "small_cnn"]
    argv += ["--dataset", "cifar10", "--ood", "svhn", "--data-root", str(tmp_path)]
    assert main([*argv, "--output", str(tmp_path / "out")]) == 2
    assert "dataset 'cifar10' not found" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
