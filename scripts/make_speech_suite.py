"""Make the speech clips voxport ships for verification (voxport/verify/speech/): each voice and sentence of
voxport.verify.speech.CLIPS synthesized by espeak-ng, trimmed, written as 16-bit FLAC at 16 kHz with a manifest
(parameters, espeak-ng version, sha256 of the decoded samples).

Run once when CLIPS change; the files are committed, so verification needs no espeak-ng. Needs espeak-ng
(apt-get install espeak-ng).

    python scripts/make_speech_suite.py [--output voxport/verify/speech]
"""
from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from voxport.verify import speech  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--output", default=speech.SUITE_DIR, help="folder for the clips and manifest.json")
    args = ap.parse_args()
    if not speech.speech_available():
        print("espeak-ng is not installed: apt-get install espeak-ng", file=sys.stderr)
        return 2
    audios = [speech.synthesize(text, voice) for voice, text in speech.CLIPS]
    speech.write_suite(args.output, audios, speech.espeak_version())
    total = sum(len(a) for a in audios) / speech.SR
    print(f"{len(audios)} clips, {total:.1f} s, in {args.output} (suite {speech.suite_id(args.output)})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
