#!/usr/bin/env bash
# Re-create every entry of the tiny-starter board from scratch, offline (about a minute per run on a
# laptop CPU): for each built-in fusion adapter and training seed, `mmrl train` a tiny LLaVA
# briefly with GRPO + LoRA (its end-of-run evaluation writes the results file), then
# `mmrl submit` each adapter's three runs together and render the page.
#   leaderboards/tiny-starter/reproduce.sh            # from the repository root
# Runs go to runs/tiny-starter/ (not committed). The board is rebuilt from scratch: its
# submissions/ are removed first (the same runs again would be refused as duplicates; `git
# checkout leaderboards/tiny-starter` restores the committed ones).
set -euo pipefail
cd "$(dirname "$0")/../.."
rm -rf leaderboards/tiny-starter/submissions
ADAPTERS=(concat weighted_sum cross_attention mm_transformer)
SEEDS=(0 1 2)
for adapter in "${ADAPTERS[@]}"; do
  files=()
  for seed in "${SEEDS[@]}"; do
    out="runs/tiny-starter/${adapter}-seed${seed}"
    mmrl train examples/grpo_color_tiny.yaml \
      --override "fusion={name: ${adapter}}" \
      --override seed="${seed}" \
      --override output_dir="${out}" \
      --override resume=false \
      --override max_steps=1 \
      --override per_device_batch_size=8 \
      --override num_generations=4 \
      --override save_steps=1 \
      --override logging_steps=1 \
      --override eval.episodes=16 \
      --override eval.batch_size=16
    files+=("${out}/results.json")
  done
  mmrl submit "${files[@]}" --board tiny-starter
done
mmrl leaderboard render tiny-starter
