"""D-Vlog, LMVD and DAIC-WOZ / E-DAIC adapters on tiny files written here in each corpus's exact layout."""

from __future__ import annotations

import json
import subprocess
import sys
import wave
from pathlib import Path

import numpy as np
import pytest

from depscreen.engine.features.text import MULTILINGUAL
from depscreen.engine.media import decode_audio_file
from depscreen.engine.train.daic import load_daic
from depscreen.engine.train.datasets import DATASETS
from depscreen.engine.train.featurize import InterviewFeaturizer
from depscreen.engine.train.study import EXPERIMENTS, MODEL, _VariantRunner, video_statistics
from depscreen.engine.train.vlogs import load_dvlog, load_lmvd
from depscreen.engine.train.windows import WINDOW_S

from .conftest import FIXTURES


def write_dvlog(root: Path, vlogs: list[tuple[str, str, str, int]], seed: int = 0) -> Path:
    """labels.csv (index, label, duration, gender, fold) + <index>/<index>_acoustic.npy / _visual.npy at 1 Hz."""
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    lines = ["index,label,duration,gender,fold"]
    for index, label, fold, seconds in vlogs:
        lines.append(f"{index},{label},{seconds},f,{fold}")
        (root / index).mkdir()
        shift = 1.0 if label == "depression" else 0.0
        np.save(root / index / f"{index}_acoustic.npy", rng.normal(shift, 1, (seconds, 25)).astype(np.float32))
        faces = rng.uniform(100, 300, (seconds, 68, 2)) + rng.uniform(0, 50, (seconds, 1, 2))
        np.save(root / index / f"{index}_visual.npy", faces.reshape(seconds, 136).astype(np.float32))
    (root / "labels.csv").write_text("\n".join(lines) + "\n")
    return root


def test_dvlog_vlogs_become_windows_of_normalised_features(tmp_path: Path) -> None:
    root = write_dvlog(
        tmp_path, [("0", "depression", "train", 25), ("1", "normal", "train", 8), ("2", "normal", "test", 5)]
    )
    load = load_dvlog(root, folds={"train"})
    assert [(s.session_id, s.label) for s in load.sessions] == [("0", 1), ("1", 0)]
    first = load.sessions[0]
    assert [len(s.audio) for s in first.sentences] == [10, 10, 5] and WINDOW_S == 10.0
    assert [(s.start_ms, s.end_ms) for s in first.sentences][:2] == [(0, 10_000), (10_000, 20_000)]
    points = first.sentences[0].video[0].reshape(68, 2)
    assert np.allclose(points.mean(0), 0, atol=1e-5) and np.sqrt((points**2).sum(1).mean()) == pytest.approx(
        1, abs=1e-5
    )
    assert all(s.available == (True, True, False) for s in first.sentences)
    assert len(load_dvlog(root).sessions) == 3


def test_dvlog_bad_files_are_named(tmp_path: Path) -> None:
    root = write_dvlog(tmp_path, [("0", "depression", "train", 5)])
    bad = np.ones((5, 25), np.float32)
    bad[3, 7] = np.nan
    np.save(root / "0" / "0_acoustic.npy", bad)
    with pytest.raises(ValueError, match=r"0_acoustic\.npy has NaN or infinite features \(first at row 3\)"):
        load_dvlog(root)
    np.save(root / "0" / "0_acoustic.npy", np.ones((5, 24), np.float32))
    with pytest.raises(ValueError, match=r"0_acoustic\.npy has shape \(5, 24\), expected \[frames, 25\]"):
        load_dvlog(root)
    (root / "0" / "0_acoustic.npy").unlink()
    with pytest.raises(FileNotFoundError, match=r"0_acoustic\.npy does not exist"):
        load_dvlog(root)
    (root / "labels.csv").write_text("index,label,fold\n0,sad,train\n")
    with pytest.raises(ValueError, match="label 'sad' is neither"):
        load_dvlog(root)


def write_openface(path: Path, frames: int, fps: float, failed: set[int]) -> None:
    """An OpenFace 2 CSV (its column names padded with a space, as OpenFace writes them)."""
    rng = np.random.default_rng(1)
    header = ["frame", "face_id", "timestamp", "confidence", "success"]
    header += [f"x_{i}" for i in range(68)] + [f"y_{i}" for i in range(68)] + ["AU01_r"]
    rows = [", ".join(header)]
    for f in range(frames):
        xy = rng.uniform(50, 250, (2, 68))
        success = 0 if f in failed else 1
        values = [f + 1, 0, round(f / fps, 3), 0.9 * success, success, *xy[0].round(2), *xy[1].round(2), 0.5]
        rows.append(", ".join(str(v) for v in values))
    path.write_text("\n".join(rows) + "\n")


def test_lmvd_reads_vggish_and_openface_and_drops_faceless_frames(tmp_path: Path) -> None:
    (tmp_path / "Audio_feature").mkdir()
    (tmp_path / "Video_feature").mkdir()
    np.save(tmp_path / "Audio_feature" / "001.npy", np.ones((20, 128), np.float32))
    write_openface(tmp_path / "Video_feature" / "001.csv", frames=30, fps=2.0, failed={0, 1, 2})
    (tmp_path / "labels.csv").write_text("index,label\n001,1\n")
    (session,) = load_lmvd(tmp_path).sessions
    assert session.label == 1
    assert sum(len(s.audio) for s in session.sentences) == 20 and session.sentences[0].audio.shape[1] == 128
    assert sum(len(s.video) for s in session.sentences) == 27, "frames without a face are dropped"
    assert [len(s.audio) for s in session.sentences] == [11, 9], "0.96 s VGGish hops in 10 s windows"
    write_openface(tmp_path / "Video_feature" / "001.csv", frames=3, fps=2.0, failed=set())
    text = (tmp_path / "Video_feature" / "001.csv").read_text().replace("x_5", "x_five")
    (tmp_path / "Video_feature" / "001.csv").write_text(text)
    with pytest.raises(ValueError, match=r"001\.csv is not an OpenFace CSV: it lacks x_5"):
        load_lmvd(tmp_path)


def write_wav(path: Path) -> None:
    pcm = decode_audio_file(FIXTURES / "jfk.flac")
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(16000)
        out.writeframes(pcm.tobytes())


def test_daic_woz_and_e_daic_use_the_participants_timed_utterances(tmp_path: Path) -> None:
    woz = tmp_path / "300_P"
    woz.mkdir()
    write_wav(woz / "300_AUDIO.wav")
    (woz / "300_TRANSCRIPT.csv").write_text(
        "start_time\tstop_time\tspeaker\tvalue\n"
        "0.1\t2.0\tEllie\thow are you doing today\n"
        "0.12\t2.32\tParticipant\tand so my fellow americans\n"
        "3.08\t4.5\tParticipant\task not\n"
        "5.2\t7.72\tParticipant\twhat your country can do for you\n"
    )
    (tmp_path / "train_split_Depression_AVEC2017.csv").write_text(
        "Participant_ID,PHQ8_Binary,PHQ8_Score,Gender\n300,1,14,1\n"
    )
    edaic = tmp_path / "301_P"
    edaic.mkdir()
    write_wav(edaic / "301_AUDIO.wav")
    (edaic / "301_Transcript.csv").write_text(
        "Start_Time,End_Time,Text,Confidence\n7.98,11.0,ask what you can do for your country,0.93\n"
    )
    (tmp_path / "dev_split.csv").write_text("Participant_ID,Gender,PHQ_Binary,PHQ_Score\n301,male,0,3\n")
    load = load_daic(tmp_path, InterviewFeaturizer(MULTILINGUAL))
    woz_session, edaic_session = sorted(load.sessions, key=lambda s: s.session_id)
    assert (woz_session.label, woz_session.score, edaic_session.label, edaic_session.score) == (1, 14.0, 0, 3.0)
    assert [s.transcript for s in woz_session.sentences] == [
        "and so my fellow americans",
        "ask not",
        "what your country can do for you",
    ]
    assert [(s.start_ms, s.end_ms) for s in woz_session.sentences][1] == (3080, 4500)
    assert all(s.text.shape == (520,) and len(s.audio) > 100 for s in woz_session.sentences)
    assert (
        len(edaic_session.sentences) == 1
        and len(load_daic(tmp_path, InterviewFeaturizer(MULTILINGUAL), {"dev"}).sessions) == 1
    )
    (tmp_path / "dev_split.csv").write_text("Participant_ID,Gender,PHQ_Binary,PHQ_Score\n301,male,0,3\n302,f,1,12\n")
    with pytest.raises(FileNotFoundError, match=r"dev_split\.csv labels participant 302 but .*302_P does not exist"):
        load_daic(tmp_path, InterviewFeaturizer(MULTILINGUAL))


def test_train_cross_validates_a_vlog_dataset_with_video(tmp_path: Path) -> None:
    vlogs = [(str(i), "depression" if i % 2 else "normal", "train", 12 + i) for i in range(8)]
    root = write_dvlog(tmp_path / "dvlog", vlogs)
    out = tmp_path / "out"
    result = subprocess.run(
        [sys.executable, "-m", "depscreen.cli", "train", "--dataset", "dvlog", "--data", str(root), "--out", str(out),
         "--folds", "2", "--epochs", "2", "--no-cache"],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout.splitlines()[-1])
    assert (summary["sessions"], summary["positives"]) == (8, 4)
    assert (out / "model.pt").is_file() and (out / "report" / "roc.png").is_file()
    assert "the text pathway is not trained" in result.stdout
    facts = json.loads((out / "results.json").read_text())["facts"]
    assert "audio + video + no text (text pathway untrained)" in facts["trained_on"], facts


def test_a_variant_whose_modalities_no_session_has_is_skipped_with_the_reason(tmp_path: Path) -> None:
    """`train --experiments` on a dataset without text once crashed in the `text` variant's folds (numpy's cast
    error on no labels); now that variant is left out and the log says why."""
    load = load_dvlog(write_dvlog(tmp_path, [("0", "depression", "train", 8), ("1", "normal", "train", 8)]))
    said: list[str] = []
    runner = _VariantRunner(
        DATASETS["dvlog"], load, "char-ngrams-v1", False, 2, video_statistics(), None, None, None, said.append
    )
    text = next(v for v in EXPERIMENTS if v.name == "text")
    assert runner.runnable(MODEL) and not runner.runnable(text)
    assert said == ["text not run: no dvlog session has text"]
