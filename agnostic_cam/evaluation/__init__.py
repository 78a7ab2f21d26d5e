"""Evaluation of saliency maps: faithfulness curves and ROAD (metrics, road), sanity checks (sanity),
and the metric suite named after Quantus's classes: localisation, complexity, faithfulness,
faithfulness_regions, robustness, randomisation, and OpenVINO XAI's ADCC (adcc) (docs/ground-truth.md says
what each one means)."""
