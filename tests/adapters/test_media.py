"""Media: probing real samples made with the bundled ffmpeg, refusing non-media, making outputs."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import av
import pytest

from tests.fakes.media_samples import ffmpeg, make_audio, make_image, make_video
from vgen_app.adapters import media
from vgen_app.adapters.media import MediaError, probe


@pytest.fixture(scope="module")
def samples(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("samples")
    make_video(d / "video.mp4", seconds=2)
    make_video(d / "faststart.mp4", seconds=2, faststart=True)
    make_video(d / "silent.mp4", seconds=2, audio=False)
    make_audio(d / "audio.m4a", seconds=2)
    make_image(d / "image.png")
    make_image(d / "image.jpg")
    return d


def test_probe_mp4_video(samples: Path) -> None:
    info = probe(samples / "video.mp4")
    assert info.kind == "video"
    assert info.container == "mp4"
    assert info.video_codec == ("h264" if media.has_encoder("libx264") else "mpeg4")
    assert info.audio_codec == "aac"
    assert info.duration_s == pytest.approx(2.0, abs=0.1)
    assert (info.width, info.height) == (160, 120)
    assert info.as_dict()["kind"] == "video"


def test_probe_video_without_audio(samples: Path) -> None:
    info = probe(samples / "silent.mp4")
    assert (info.kind, info.audio_codec) == ("video", None)


@pytest.mark.skipif(not media.has_encoder("libvpx-vp9"), reason="no VP9 encoder in this ffmpeg")
def test_probe_webm(tmp_path: Path) -> None:
    info = probe(make_video(tmp_path / "v.webm", seconds=1))
    assert (info.kind, info.container, info.video_codec, info.audio_codec) == (
        "video",
        "webm",
        "vp9",
        "opus",
    )
    assert info.duration_s == pytest.approx(1.0, abs=0.1)


@pytest.mark.parametrize(
    ("name", "encoder", "container", "codec"),
    [
        ("a.m4a", "aac", "m4a", "aac"),
        ("a.wav", "pcm_s16le", "wav", "pcm_s16le"),
        ("a.mp3", "libmp3lame", "mp3", "mp3"),
        ("a.ogg", "libvorbis", "ogg", "vorbis"),
    ],
)
def test_probe_audio(tmp_path: Path, name: str, encoder: str, container: str, codec: str) -> None:
    if not media.has_encoder(encoder):
        pytest.skip(f"no {encoder} encoder in this ffmpeg")
    info = probe(make_audio(tmp_path / name, seconds=2))
    assert (info.kind, info.container, info.audio_codec, info.video_codec) == (
        "audio",
        container,
        codec,
        None,
    )
    assert info.duration_s == pytest.approx(2.0, abs=0.1)
    assert info.width is None


def test_mp3_with_cover_art_is_audio(tmp_path: Path, samples: Path) -> None:
    song = make_audio(tmp_path / "song.mp3")
    out = tmp_path / "cover.mp3"
    cover = ["-i", str(samples / "image.jpg"), "-map", "0", "-map", "1"]
    ffmpeg("-i", str(song), *cover, "-c", "copy", "-disposition:v", "attached_pic", str(out))
    assert probe(out).kind == "audio"


@pytest.mark.parametrize(
    ("name", "container", "codec"), [("image.png", "png", "png"), ("image.jpg", "jpeg", "mjpeg")]
)
def test_probe_images(samples: Path, name: str, container: str, codec: str) -> None:
    info = probe(samples / name)
    assert (info.kind, info.container, info.video_codec) == ("image", container, codec)
    assert info.duration_s is None and info.audio_codec is None
    assert (info.width, info.height) == (160, 120)


# --- refusals: each must be a MediaError with a message fit for the user -------------------------


def _refused(path: Path) -> str:
    with pytest.raises(MediaError) as caught:
        probe(path)
    message = str(caught.value)
    assert message and "Traceback" not in message and str(path) not in message
    return message


def test_refuses_empty_file(tmp_path: Path) -> None:
    (tmp_path / "empty.mp4").write_bytes(b"")
    assert "empty" in _refused(tmp_path / "empty.mp4")


def test_refuses_random_bytes(tmp_path: Path) -> None:
    (tmp_path / "random.mp4").write_bytes(os.urandom(20_000))
    _refused(tmp_path / "random.mp4")


def test_refuses_text_file_renamed(tmp_path: Path) -> None:
    (tmp_path / "notes.mp4").write_text("Meeting notes\n- buy milk\n- call Bob\n" * 100)
    _refused(tmp_path / "notes.mp4")


def test_refuses_shell_script_renamed(tmp_path: Path) -> None:
    (tmp_path / "run.mp4").write_text("#!/bin/sh\nrm -rf /tmp/nothing\necho done\n")
    _refused(tmp_path / "run.mp4")


def test_refuses_elf_executable_renamed(tmp_path: Path) -> None:
    elf = Path(os.path.realpath(sys.executable)).read_bytes()[:200_000]
    assert elf.startswith(b"\x7fELF")
    (tmp_path / "app.mp4").write_bytes(elf)
    _refused(tmp_path / "app.mp4")


@pytest.mark.parametrize(
    ("name", "keep"), [("video.mp4", 0.3), ("faststart.mp4", 0.3), ("faststart.mp4", 0.8)]
)
def test_refuses_truncated_mp4(samples: Path, tmp_path: Path, name: str, keep: float) -> None:
    data = (samples / name).read_bytes()
    (tmp_path / "cut.mp4").write_bytes(data[: int(len(data) * keep)])
    _refused(tmp_path / "cut.mp4")


def test_refuses_file_without_audio_or_video(tmp_path: Path) -> None:
    (tmp_path / "subs.srt").write_text("1\n00:00:00,000 --> 00:00:01,000\nhello\n")
    ffmpeg("-i", str(tmp_path / "subs.srt"), str(tmp_path / "subs.mkv"))
    assert "no video or audio" in _refused(tmp_path / "subs.mkv")


def test_refuses_huge_dimensions(tmp_path: Path) -> None:
    assert "too large" in _refused(make_image(tmp_path / "wide.png", size="9000x16"))


def test_refuses_missing_file(tmp_path: Path) -> None:
    _refused(tmp_path / "nothing-here.mp4")


# --- making media -----------------------------------------------------------------------------


def test_lipsync_loops_short_video_to_audio_length(tmp_path: Path) -> None:
    video = make_video(tmp_path / "v.mp4", seconds=1, size="161x121", audio=False)
    audio = make_audio(tmp_path / "a.m4a", seconds=3)
    media.make_lipsync(video, audio, tmp_path / "out.mp4")
    info = probe(tmp_path / "out.mp4")
    assert (info.kind, info.container, info.audio_codec) == ("video", "mp4", "aac")
    assert info.duration_s == pytest.approx(3.0, abs=0.25)
    assert (info.width, info.height) == (160, 120)  # made even for H.264
    with av.open(str(tmp_path / "out.mp4")) as container:  # 4:2:0: what every browser plays
        assert container.streams.video[0].codec_context.pix_fmt == "yuv420p"


def test_lipsync_cuts_long_video_to_audio_length(tmp_path: Path, samples: Path) -> None:
    audio = make_audio(tmp_path / "a.wav", seconds=1)
    media.make_lipsync(samples / "video.mp4", audio, tmp_path / "out.mp4")
    assert probe(tmp_path / "out.mp4").duration_s == pytest.approx(1.0, abs=0.25)


def test_talking_photo_lasts_as_long_as_the_audio(tmp_path: Path, samples: Path) -> None:
    audio = make_audio(tmp_path / "a.mp3", seconds=2)
    media.make_talking_photo(samples / "image.png", audio, tmp_path / "out.mp4")
    info = probe(tmp_path / "out.mp4")
    assert (info.kind, info.audio_codec, info.width, info.height) == ("video", "aac", 160, 120)
    assert info.duration_s == pytest.approx(2.0, abs=0.25)


@pytest.mark.parametrize("with_audio", [True, False])
def test_faceswap_keeps_video_duration_and_audio(
    tmp_path: Path, samples: Path, with_audio: bool
) -> None:
    video = samples / ("video.mp4" if with_audio else "silent.mp4")
    media.make_faceswap(video, samples / "image.jpg", tmp_path / "out.mp4")
    info = probe(tmp_path / "out.mp4")
    assert info.kind == "video"
    assert info.duration_s == pytest.approx(2.0, abs=0.25)
    assert (info.audio_codec == "aac") is with_audio


def test_ffmpeg_failure_is_a_media_error_and_leaves_nothing(tmp_path: Path, samples: Path) -> None:
    bogus = tmp_path / "face.png"
    bogus.write_text("not an image")
    with pytest.raises(MediaError, match="ffmpeg failed"):
        media.make_faceswap(samples / "video.mp4", bogus, tmp_path / "out.mp4")
    assert list(tmp_path.iterdir()) == [bogus]
