#!/usr/bin/env bash
# The book's GPU checks and full-scale runs in one call on a lent GPU machine (README: "On a lent
# GPU machine"). Run it from the repository root:
#
#   bash tools/device_check.sh SECONDS [CHAPTER[:EXPERIMENT,...] ...]
#
#   SECONDS  the wall time the whole script may take (leave a minute of the call's limit for the
#            archive and the transfer back); CHAPTER  an id from `python -m kdlib list`, optionally
#            with some of its experiments (default: every chapter, in the book's order).
#
# 1. What the machine is (GPU, PyTorch), the CUDA-vs-CPU tolerance test and `kdlib bench` on the
#    GPU (skipped with CHECKS=0, e.g. in a call that only resumes a run);
# 2. `python -m kdlib reproduce CHAPTER --scale full --device cuda` for each chapter in turn. When
#    SECONDS are used up the running one gets SIGTERM: it saves its training checkpoints and keeps
#    every finished result (kdlib/cache.py), so the next call resumes it;
# 3. into $OUT: the logs, `times.tsv` (chapter, seconds, exit status: 0 claims hold, 1 a claim
#    failed, 2 data missing, 124 stopped at the budget) and `results.tar.gz`: claims tables,
#    figures and cached results, with the training checkpoints if the archive stays within the
#    16 MiB a returned file may have.
#
# Data and earlier results travel in .carry/ (ignored by git; name it in the call's `carry`):
# .carry/mnist (MNIST's IDX files, chapter 4), .carry/cifar10/cifar10.npz (chapter 4's deep
# section), .carry/results.tar.gz (a previous call's archive, unpacked before anything runs).
# On a warm machine the results of the previous call are still on disk and are resumed as well.
set -uo pipefail

budget=${1:?usage: bash tools/device_check.sh SECONDS [CHAPTER[:EXPERIMENT,...] ...]}
shift
chapters=("$@")
start=$SECONDS
out=${OUT:-results/device-check}
py=${PYTHON:-python3}
device=${KDLIB_DEVICE:-cuda}
limit=$((16 * 1024 * 1024))
mkdir -p "$out"
export PYTHONUNBUFFERED=1 KDLIB_SCALE=full
[ -d .carry/mnist ] && export KDLIB_MNIST=$PWD/.carry/mnist
[ -f .carry/cifar10/cifar10.npz ] && export KDLIB_CIFAR10=$PWD/.carry/cifar10
[ -f .carry/results.tar.gz ] && tar -xzf .carry/results.tar.gz

if [ ${#chapters[@]} -eq 0 ]; then
  mapfile -t chapters < <("$py" -m kdlib list | awk '{print $1}')
fi

if [ "${CHECKS:-1}" != 0 ]; then
  {
    command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
    "$py" -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available())"
    "$py" -m pytest -q -p no:cacheprovider tests/test_reliability.py -k "cuda or mixed_devices" -rs
    "$py" -m kdlib bench --device "$device"
  } 2>&1 | tee "$out/checks.log"
fi

printf 'chapter\tseconds\tstatus\n' >"$out/times.tsv"
for entry in "${chapters[@]}"; do
  chapter=${entry%%:*}
  only=()
  [ "$entry" != "$chapter" ] && only=(--only "${entry#*:}")
  left=$((budget - (SECONDS - start)))
  if [ "$left" -le 5 ]; then
    printf '%s\t0\tnot started: no time left\n' "$entry" >>"$out/times.tsv"
    continue
  fi
  began=$SECONDS
  timeout -s TERM -k 30 "$left" "$py" -m kdlib reproduce "$chapter" --scale full \
    --device "$device" "${only[@]}" 2>&1 | tee -a "$out/reproduce.log"
  status=${PIPESTATUS[0]}
  printf '%s\t%s\t%s\n' "$entry" $((SECONDS - began)) "$status" >>"$out/times.tsv"
done
column -t -s $'\t' "$out/times.tsv" 2>/dev/null || cat "$out/times.tsv"

# The archive: everything under results/full, then without checkpoints, then without any file
# over 4 MiB, until it fits in one returned file.
archive=$out/results.tar.gz
if [ -d results/full ]; then
  tar -czf "$archive" results/full
  if [ "$(stat -c %s "$archive")" -gt "$limit" ]; then
    tar -czf "$archive" --exclude='checkpoint-*' results/full
  fi
  if [ "$(stat -c %s "$archive")" -gt "$limit" ]; then
    find results/full -type f -size -4M ! -name 'checkpoint-*' -print0 |
      tar -czf "$archive" --null -T -
  fi
  echo "results.tar.gz: $(stat -c %s "$archive") bytes"
fi
