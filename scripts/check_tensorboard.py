#!/usr/bin/env python3
"""Reads a ti-xla training run's TensorBoard event files with TensorBoard's own reader
(`EventAccumulator`, the code `tensorboard --logdir` loads runs with) and checks what
`--report-to tensorboard` promises: the `loss` and `lr` scalars of every logged step (equal
to train_log.jsonl's), a `validation` image per validation step, and the hyper-parameters
(hparams plugin: an experiment and a session start naming the run's settings).

    python3 -m venv /tmp/tbcheck && /tmp/tbcheck/bin/pip install tensorboard
    ti-xla train ... --output-dir OUT --validation-prompt "a photo of <cat-toy>" --validation-steps 10
    /tmp/tbcheck/bin/python scripts/check_tensorboard.py OUT

Exits non-zero, naming what is wrong, when a check fails.
"""

import argparse
import glob
import json
import math
import os
import sys

from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.plugins.hparams import plugin_data_pb2


def fail(msg):
    print(f"FAIL: {msg}")
    sys.exit(1)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("output_dir")
    ap.add_argument("--logging-dir", default="logs")
    args = ap.parse_args()
    run = os.path.join(args.output_dir, args.logging_dir, "textual_inversion")
    files = sorted(glob.glob(os.path.join(run, "events.out.tfevents.*")))
    if not files:
        fail(f"no event files in {run}")
    ea = EventAccumulator(run, size_guidance={"images": 0, "scalars": 0, "tensors": 0})
    ea.Reload()
    tags = ea.Tags()
    print(f"{len(files)} event file(s) in {run}; tags: "
          f"scalars {tags['scalars']}, images {tags['images']}")

    log = [json.loads(line) for line in open(os.path.join(args.output_dir, "train_log.jsonl"))]
    for tag in ("loss", "lr"):
        if tag not in tags["scalars"]:
            fail(f"no {tag} scalars")
        events = ea.Scalars(tag)
        got = {e.step: e.value for e in events}
        want = {r["step"] + 1: r[tag] for r in log}
        if sorted(got) != sorted(want):
            fail(f"{tag}: steps {sorted(got)[:5]}... != train_log's {sorted(want)[:5]}...")
        worst = max(abs(got[s] - want[s]) / max(abs(want[s]), 1e-30) for s in want)
        if worst > 1e-6:  # float32 in the event, float64 in the log
            fail(f"{tag}: relative difference {worst:.2e} from train_log.jsonl")
        print(f"{tag}: {len(events)} steps ({events[0].step}..{events[-1].step}), equal to "
              f"train_log.jsonl within {worst:.1e}; last {events[-1].value:.6g}")

    steps = sorted(int(d.split("-")[1]) for d in os.listdir(os.path.join(args.output_dir, "validation"))
                   if d.startswith("step-"))
    if steps:
        if "validation" not in tags["images"]:
            fail("no validation images")
        images = ea.Images("validation")
        if [i.step for i in images] != steps:
            fail(f"validation images at {[i.step for i in images]}, folders at {steps}")
        for i in images:
            if not i.encoded_image_string.startswith(b"\x89PNG") or i.width <= 0 or i.height <= 0:
                fail(f"image at step {i.step} is not a PNG of its size")
        print(f"validation: {len(images)} images at steps {steps}, "
              f"{images[0].width}x{images[0].height} PNG")

    content = ea.PluginTagToContent("hparams")
    if "_hparams_/session_start_info" not in content or "_hparams_/experiment" not in content:
        fail(f"hparams summaries missing: {sorted(content)}")
    start = plugin_data_pb2.HParamsPluginData.FromString(content["_hparams_/session_start_info"])
    experiment = plugin_data_pb2.HParamsPluginData.FromString(content["_hparams_/experiment"])
    hp = start.session_start_info.hparams
    for key in ("placeholder_token", "learning_rate", "train_batch_size"):
        if key not in hp:
            fail(f"hyper-parameter {key} missing: {sorted(hp)}")
    names = {h.name for h in experiment.experiment.hparam_infos}
    if names != set(hp):
        fail("the experiment's hparams differ from the session's")
    metrics = [m.name.tag for m in experiment.experiment.metric_infos]
    lr = hp["learning_rate"].number_value
    if not math.isfinite(lr) or lr <= 0:
        fail(f"learning_rate {lr}")
    print(f"hparams: {len(hp)} settings (placeholder_token="
          f"{hp['placeholder_token'].string_value!r}, learning_rate={lr:g}, train_batch_size="
          f"{hp['train_batch_size'].number_value:g}), metrics {metrics}")
    print("OK")


if __name__ == "__main__":
    main()
