#!/usr/bin/env python3
"""Parses OpenMetrics text from stdin with the Prometheus project's own Python parser
(prometheus_client.openmetrics.parser, strict: it raises on anything the format forbids) and
prints one JSON object per sample: {"name", "labels", "value", "type"}. Exit 1 with the
parser's message when the text is not valid OpenMetrics."""

import json
import sys

from prometheus_client.openmetrics.parser import text_string_to_metric_families


def main():
    text = sys.stdin.read()
    try:
        families = list(text_string_to_metric_families(text))
    except Exception as e:  # the parser raises ValueError and friends
        print(f"not valid OpenMetrics: {e}", file=sys.stderr)
        sys.exit(1)
    out = []
    for f in families:
        for s in f.samples:
            out.append(
                {"name": s.name, "labels": s.labels, "value": s.value, "type": f.type}
            )
    json.dump(out, sys.stdout)


if __name__ == "__main__":
    main()
