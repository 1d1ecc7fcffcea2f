#!/usr/bin/env bash
# Re-create every entry of the tiny-starter board from scratch, offline: run the fusion study
# (examples/study_fusion.yaml: tiny LLaVA x the four built-in adapters x 3 training seeds; about
# 20-30 min on 2 CPU cores, resumable), then `mmrl submit` each adapter's three colour-task runs
# together and render the page.
#   leaderboards/tiny-starter/reproduce.sh            # from the repository root
# Runs go to runs/study_fusion/ (not committed). The board is rebuilt from scratch: its
# submissions/ are removed first (the same runs again would be refused as duplicates; `git
# checkout leaderboards/tiny-starter` restores the committed ones).
set -euo pipefail
cd "$(dirname "$0")/../.."
rm -rf leaderboards/tiny-starter/submissions
mmrl sweep examples/study_fusion.yaml --jobs 2
for adapter in concat weighted_sum cross_attention mm_transformer; do
  mmrl submit runs/study_fusion/cells/tiny-llava__"${adapter}"__color_shape__grpo__s*/results.json \
    --board tiny-starter
done
mmrl leaderboard render tiny-starter
