#!/usr/bin/env bash
# Wheels to run Ray Train on the lent GPU machine, whose Python (3.12, x86-64, torch preinstalled)
# has no Ray and cannot download. Run here, in the repository root:
#
#     bash scripts/device_wheels.sh            # -> .whl/a/ and .whl/b/, each under a call's 64 MiB
#
# Ray's wheel (79 MB for 2.60) is over what one device call carries, so it travels in two parts:
#   call 1: carry [".whl/a"], command `true`     (the machine keeps ignored paths while it is warm:
#                                                 make call 2 within its 30 idle seconds)
#   call 2: carry [".whl/b"], command `bash scripts/device_ray_check.sh` (joins, installs, measures)
# The packages Ray and Ray Train need that the machine's image lacks (jsonschema, pydantic,
# tensorboardX and theirs; /work/.library/device/KINDS.md lists what it has) go in part b.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
RAY=$("$PY" -c 'from importlib.metadata import version; print(version("ray"))')
# missing there, or maybe older there than these need (typing-extensions, packaging)
MISSING=(jsonschema jsonschema-specifications referencing rpds-py pydantic pydantic-core
         annotated-types typing-inspection typing-extensions packaging tensorboardX)
rm -rf .whl && mkdir -p .whl/dl .whl/a .whl/b
download() {
  "$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 --platform manylinux1_x86_64 -d .whl/dl "$@"
}
download "ray==$RAY"
download "${MISSING[@]}"
wheel=$(basename .whl/dl/ray-*.whl)
echo "$wheel" > .whl/b/ray.name
split -b 40M -d ".whl/dl/$wheel" .whl/a/ray.part
mv .whl/a/ray.part01 .whl/b/  # 79 MB: part 00 (40 MiB) in a, part 01 in b
for f in .whl/dl/*.whl; do [[ $f == *"/ray-"* ]] || mv "$f" .whl/b/; done
rm -rf .whl/dl
du -sh .whl/a .whl/b
