"""Builds the job's Java operators (flink_jobs/java/) into a jar, once per source version.

No Maven here: the only jars are the ones inside the apache-flink wheel, and `javac` (JDK 11+)
compiles against them (`pyflink/lib/*`). The jar is cached under `build/` in the repository,
named by the hash of the sources and the Flink version, so a change to a .java file or another
Flink gives a new jar and concurrent runs never see a half-written one (written to a temporary
name, then renamed). Compiling takes about 3 s; a cached jar costs nothing.

The job puts the jar on `pipeline.jars`, which loads it in the local mini-cluster and ships it to a
cluster's TaskManagers with the job.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import tempfile
import zipfile
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
JAVA_SOURCES = Path(__file__).resolve().parent / "java"
BUILD_DIR = REPO_ROOT / "build"


class JavaBuildError(RuntimeError):
    """The Java operators could not be compiled (no JDK, or a compile error)."""


def _flink_home() -> Path:
    import pyflink

    return Path(pyflink.__file__).resolve().parent


def _sources() -> list[Path]:
    return sorted(JAVA_SOURCES.rglob("*.java"))


def jar_path() -> Path:
    digest = hashlib.sha256()
    for source in _sources():
        digest.update(source.relative_to(JAVA_SOURCES).as_posix().encode())
        digest.update(source.read_bytes())
    jars = sorted(p.name for p in (_flink_home() / "lib").glob("*.jar"))
    digest.update("\n".join(jars).encode())
    return BUILD_DIR / f"txn-replay-operators-{digest.hexdigest()[:16]}.jar"


def ensure_jar() -> Path:
    """The path of the operators' jar, compiling it first if this version is not built yet."""
    target = jar_path()
    if target.is_file():
        return target
    javac = shutil.which("javac")
    if javac is None:
        raise JavaBuildError(
            "javac was not found on PATH: the Flink job's Java operators need a JDK 11 or newer "
            "(on Debian: apt-get install openjdk-17-jdk-headless)"
        )
    home = _flink_home()
    classpath = os.pathsep.join(str(p) for p in sorted((home / "lib").glob("*.jar")))
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent, prefix=".javac-") as scratch:
        classes = Path(scratch) / "classes"
        command = [javac, "--release", "11", "-nowarn", "-encoding", "UTF-8", "-cp", classpath,
                   "-d", str(classes), *map(str, _sources())]  # fmt: skip
        done = subprocess.run(command, capture_output=True, text=True)
        if done.returncode != 0:
            raise JavaBuildError(f"compiling the Java operators in {JAVA_SOURCES} failed: {done.stderr.strip()}")
        partial = Path(scratch) / "operators.jar"
        with zipfile.ZipFile(partial, "w", zipfile.ZIP_DEFLATED) as jar:
            jar.writestr("META-INF/MANIFEST.MF", "Manifest-Version: 1.0\n\n")
            for path in sorted(classes.rglob("*.class")):
                jar.write(path, path.relative_to(classes).as_posix())
        os.replace(partial, target)
    return target


if __name__ == "__main__":
    print(ensure_jar())
