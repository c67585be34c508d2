#!/usr/bin/env bash
# rnnmnist as a user installs it: the wheel, with its core dependencies only, in a fresh virtual
# environment outside the checkout, used from an unrelated folder. It trains with a packaged preset
# (--config seed), evaluates, predicts an image, lists the presets, resolves every preset by name,
# and checks that a command whose extra is missing says which one to install.
#
#   bash .ci/wheel-smoke.sh [WHEEL]      # default: build dist/rnnmnist-*.whl first (python -m build)
#
# Data: RNNMNIST_DATA_DIR, else ../shared/data beside the checkout when it holds MNIST, else a tiny
# synthetic MNIST written by the installed package. Everything it makes is in a temporary folder,
# removed at the end.
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
step() { printf '\n== %s\n' "$*"; }

wheel="${1:-}"
if [ -z "$wheel" ]; then
  step "build the wheel"
  (cd "$repo" && rm -rf build dist && "${PYTHON:-$repo/.venv/bin/python}" -m build --wheel >"$work/build.log" 2>&1) \
    || { cat "$work/build.log"; exit 1; }
  wheel="$(ls "$repo"/dist/rnnmnist-*.whl)"
fi
wheel="$(cd "$(dirname "$wheel")" && pwd)/$(basename "$wheel")"
echo "wheel: $wheel"
python3 - "$wheel" "$repo" <<'EOF'
import sys
import zipfile
from pathlib import Path

names = set(zipfile.ZipFile(sys.argv[1]).namelist())
repo = Path(sys.argv[2])
wanted = [f"rnnmnist/configs/{p.name}" for p in sorted((repo / "configs").glob("*.toml"))]
wanted += [f"rnnmnist/static/{p.name}" for p in sorted((repo / "rnnmnist" / "static").iterdir())]
missing = [n for n in wanted if n not in names]
assert not missing, f"the wheel lacks {missing}"
print(f"  carries the presets and the serve page: {', '.join(n.split('/')[-1] for n in wanted)}")
EOF

step "a fresh venv, the wheel and its core dependencies"
start=$SECONDS
python3 -m venv "$work/venv"
"$work/venv/bin/pip" install --quiet "$wheel" 2>&1 | grep -v "^WARNING: Location" || true
"$work/venv/bin/python" -c "import rnnmnist" # the install must have worked (pip's output is filtered above)
echo "installed in $((SECONDS - start)) s"
export PATH="$work/venv/bin:$PATH"
hash -r

mkdir "$work/elsewhere"
cd "$work/elsewhere"  # an unrelated folder: no configs/, no rnnmnist/ source
where="$(python -c 'import rnnmnist; print(rnnmnist.__file__)')"
case "$where" in
  "$work/venv/"*) echo "rnnmnist from $where" ;;
  *) echo "rnnmnist was imported from $where, not from the wheel's venv" >&2; exit 1 ;;
esac

data="${RNNMNIST_DATA_DIR:-}"
if [ -z "$data" ] && [ -d "$repo/../shared/data/MNIST/raw" ]; then data="$(cd "$repo/../shared/data" && pwd)"; fi
if [ -z "$data" ]; then
  data="$work/tiny-mnist"
  python -c "import sys; from pathlib import Path; from rnnmnist.training.synthetic import make_tiny_mnist; \
make_tiny_mnist(Path(sys.argv[1]), n_train=6000, n_test=500)" "$data"  # the presets hold out 5,000 to validate
  echo "data: a tiny synthetic MNIST in $data"
else
  echo "data: $data"
fi

step "rnnmnist --version"
rnnmnist --version
step "rnnmnist presets"
rnnmnist presets

step "every preset resolves by name"
python - <<'EOF'
import json
import subprocess

listed = json.loads(subprocess.run(["rnnmnist", "presets", "--json"], capture_output=True, check=True).stdout)
for p in listed["presets"]:
    if p["kind"] == "train":
        done = subprocess.run(["rnnmnist", "train", "--config", p["name"], "--print-config"], capture_output=True)
        assert done.returncode == 0, (p["name"], done.stderr)
        print(f"  train --config {p['name']}: resolved")
    else:  # a sweep space: read and checked before Optuna is asked for, which the core install lacks
        done = subprocess.run(["rnnmnist", "sweep", "--config", p["name"], "--trials", "1"], capture_output=True, text=True)
        expected = "Error: rnnmnist sweep needs the sweep extra: pip install 'rnnmnist[sweep]'\n"
        assert (done.returncode, done.stderr) == (1, expected), (p["name"], done.returncode, done.stderr)
        print(f"  sweep --config {p['name']}: read; then asks for the sweep extra, as the core install lacks it")
EOF

step "train --config seed, eval, predict, runs"
rnnmnist train --config seed --iters 2560 --data-dir "$data" --out runs/seed
rnnmnist eval runs/seed/checkpoint.pt --data-dir "$data"
cp "$repo/examples/seven.png" .
rnnmnist predict runs/seed/checkpoint.pt seven.png
rnnmnist runs

step "a command whose extra is missing says which to install"
set +e
message="$(rnnmnist plot runs/seed 2>&1)"
code=$?
set -e
echo "$message (exit $code)"
[ "$code" = 1 ] && [ "$message" = "Error: rnnmnist plot needs the plots extra: pip install 'rnnmnist[plots]'" ]

echo
echo "wheel smoke: passed in $SECONDS s"
