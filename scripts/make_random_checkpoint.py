"""Save a random-weight wav2vec2-family checkpoint (save_pretrained layout) for offline demos and benchmarks.

    python scripts/make_random_checkpoint.py /tmp/w2v-base --model-type wav2vec2 --task cls --norm group --preset base --spread
    python scripts/make_random_checkpoint.py /tmp/xlsr --model-type wav2vec2 --task ctc --norm layer --preset xls-r-300m
    python scripts/make_random_checkpoint.py /tmp/xlsr1b --task ctc --norm layer --preset xls-r-1b --spread   # 3.9 GB
"""
import argparse

from voxport.archs.wav2vec2 import MODEL_TYPES, PRESETS, make_checkpoint

ap = argparse.ArgumentParser()
ap.add_argument("folder")
ap.add_argument("--model-type", default="wav2vec2", choices=MODEL_TYPES)
ap.add_argument("--task", default="cls", choices=["cls", "ctc"])
ap.add_argument("--norm", default="layer", choices=["layer", "group"])
ap.add_argument("--preset", default="tiny", choices=sorted(PRESETS))
ap.add_argument("--seed", type=int, default=0)
ap.add_argument("--spread", action="store_true", help="biases and norm scales drawn around their init, as in trained "
                "checkpoints (fresh ones are all 0 or 1, which simplifies the exported graph unlike a real checkpoint)")
args = ap.parse_args()
print(make_checkpoint(args.folder, args.model_type, args.task, args.norm, args.preset, args.seed, spread=args.spread))
