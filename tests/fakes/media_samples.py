"""Small sample media for tests, made with the bundled ffmpeg from lavfi sources (fast, no fixtures)."""

from __future__ import annotations

import subprocess
from pathlib import Path

from vgen_app.adapters.media import ffmpeg_exe, has_encoder

_VIDEO_CODECS = {
    ".webm": ["-c:v", "libvpx-vp9", "-deadline", "realtime", "-cpu-used", "8", "-b:v", "200k"],
    ".mkv": ["-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p"],
}
_AUDIO_CODECS = {
    ".m4a": ["-c:a", "aac"],
    ".mp3": ["-c:a", "libmp3lame"],
    ".wav": ["-c:a", "pcm_s16le"],
    ".ogg": ["-c:a", "libvorbis"],
    ".opus": ["-c:a", "libopus"],
    ".webm": ["-c:a", "libopus"],
}


def ffmpeg(*args: str) -> None:
    subprocess.run(
        [ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-nostdin", "-y", *args],
        stdin=subprocess.DEVNULL,
        check=True,
        capture_output=True,
        timeout=60,
    )


def make_video(
    path: Path,
    seconds: float = 2,
    size: str = "160x120",
    audio: bool = True,
    faststart: bool = False,
) -> Path:
    """A test-pattern video (with a 440 Hz tone unless `audio=False`); container by extension."""
    path = Path(path)
    ext = path.suffix.lower()
    args = ["-f", "lavfi", "-i", f"testsrc=size={size}:rate=25:duration={seconds}"]
    if audio:
        args += ["-f", "lavfi", "-i", f"sine=frequency=440:duration={seconds}"]
    vcodec = _VIDEO_CODECS.get(ext)
    if vcodec is None:
        odd = any(int(n) % 2 for n in size.split("x"))  # 4:2:0 needs even sides; 4:4:4 does not
        vcodec = (
            ["-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv444p" if odd else "yuv420p"]
            if has_encoder("libx264")
            else ["-c:v", "mpeg4"]
        )
    args += vcodec
    if audio:
        args += _AUDIO_CODECS.get(ext, ["-c:a", "aac"])
    if faststart:
        args += ["-movflags", "+faststart"]
    ffmpeg(*args, "-t", str(seconds), str(path))
    return path


def make_audio(path: Path, seconds: float = 2, frequency: int = 440) -> Path:
    """A sine tone; codec by extension (.m4a aac, .mp3, .wav, .ogg vorbis, .opus)."""
    path = Path(path)
    codec = _AUDIO_CODECS.get(path.suffix.lower(), ["-c:a", "aac"])
    ffmpeg("-f", "lavfi", "-i", f"sine=frequency={frequency}:duration={seconds}", *codec, str(path))
    return path


def make_image(path: Path, size: str = "160x120") -> Path:
    """One test-pattern frame as .png or .jpg."""
    path = Path(path)
    ffmpeg("-f", "lavfi", "-i", f"testsrc=size={size}", "-frames:v", "1", "-update", "1", str(path))
    return path
