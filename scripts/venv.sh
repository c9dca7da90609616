# Sourced by run.sh and test.sh: make ./.venv and install faceedit (with its test extras) into it.
# Reinstalls only when pyproject.toml changed since the last install.
if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
stamp=.venv/.faceedit-installed
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
  echo "installing faceedit and its dependencies into .venv (a few minutes the first time)..."
  .venv/bin/pip install -q --upgrade pip >/dev/null
  # torch first, at the version that lies on these machines' disk, so nothing downloads gigabytes.
  .venv/bin/pip install -q "torch==2.14.1" "torchvision==0.29.1" \
    || .venv/bin/pip install -q "torch>=2.4,<2.15" "torchvision>=0.19,<0.30"
  .venv/bin/pip install -q -e ".[test]"
  touch "$stamp"
fi
