"""The claims table: each paper's claim judged from the measurements, holding or not."""

from __future__ import annotations

import pytest

from seglab.bench.claims import claims_table, lineage_claims


def row(box_ap: float, *, proposal_s=0.3, features_s=0.1, heads_s=0.01, curve=None, **extra):
    return {"proposal_s": proposal_s, "features_s": features_s, "heads_s": heads_s,
            "box_AP": box_ap, "train_steps": 100, "curve": curve or [], **extra}  # fmt: skip


def rising(*aps: float) -> list[dict[str, float]]:
    return [{"step": index, "train_s": 60.0 * (index + 1), "box_AP": ap}
            for index, ap in enumerate(aps)]  # fmt: skip


SVD = {"ranks": [64, 16], "dense_heads_s": 0.020, "svd_heads_s": 0.016, "box_AP": 0.495,
       "fc_share": 0.4, "fc6_inputs": 12544}  # fmt: skip


def report(rcnn=0.3, fast=0.4, faster=0.5, mask=0.55, paper_scale=None):
    return {
        "models": {
            "rcnn": row(rcnn, proposal_s=0.3, features_s=0.2),
            "fast_rcnn": row(fast, proposal_s=0.3, features_s=0.05, svd=SVD),
            "faster_rcnn": row(faster, proposal_s=0.002, features_s=0.04,
                               curve=rising(0.2, 0.4, 0.5)),
            "mask_rcnn": row(mask, proposal_s=0.002, features_s=0.04,
                             curve=rising(0.1, 0.3, 0.45, 0.55),
                             box_AP_by_size={"small": -1.0, "medium": 0.5, "large": 0.61}),
        },
        "paper_scale": paper_scale,
    }  # fmt: skip


def by_source(claims):
    return {claim["source"]: claim for claim in claims}


def test_the_papers_order_holds_when_ap_rises_along_the_line():
    claims = by_source(lineage_claims(report()))
    assert [claim["holds"] for claim in claims.values()] == [True, True, True, True, True]
    assert claims["Faster R-CNN §4.1, Table 5"]["measured"] == ("300 ms -> 2.0 ms per image (150x)")
    svd = claims["Fast R-CNN §3.1, §4.4, Fig. 2"]
    assert "20.0 -> 16.0 ms per image (1.25x" in svd["measured"]
    assert "box AP 0.400 -> 0.495" in svd["measured"]


@pytest.mark.parametrize(
    "aps, source",
    [
        ({"rcnn": 0.667, "fast": 0.174}, "R-CNN, Fast R-CNN Table 1, Faster R-CNN Table 2"),
        ({"faster": 0.5, "fast": 0.6}, "R-CNN, Fast R-CNN Table 1, Faster R-CNN Table 2"),
        ({"mask": 0.4}, "Mask R-CNN §5.1, Table 3"),
    ],
)
def test_a_falling_ap_does_not_hold_and_says_where_each_run_stood(aps, source):
    claim = by_source(lineage_claims(report(**aps)))[source]
    assert claim["holds"] is False
    if source.startswith("Mask"):  # 100 steps in 240 s; its AP at each evaluation
        assert (
            "Mask R-CNN: 100 steps of 2.40 s, AP along the budget 0.10/0.30/0.45/0.55, "
            "AP S/M/L n/a/0.50/0.61" in claim["why"]
        )


def test_mask_rcnn_is_judged_against_faster_rcnn_at_equal_steps():
    """The paper compares equal schedules: Faster R-CNN's curve is read at Mask R-CNN's last
    step (linear between evaluations), beside the equal-minutes figures."""
    faster_curve = [{"step": s, "train_s": s, "box_AP": ap}
                    for s, ap in ((100, 0.2), (200, 0.6), (300, 0.7))]  # fmt: skip
    models = report(faster=0.7, mask=0.5)["models"]
    models["faster_rcnn"]["curve"] = faster_curve
    models["mask_rcnn"]["train_steps"] = 150  # Faster R-CNN at step 150: 0.4
    claim = by_source(lineage_claims({"models": models}))["Mask R-CNN §5.1, Table 3"]
    assert claim["holds"] is True
    assert claim["measured"] == (
        "equal minutes: box AP 0.700 -> 0.500; equal steps (150): 0.400 -> 0.500"
    )
    models["mask_rcnn"]["train_steps"] = 250  # Faster R-CNN at step 250: 0.65
    claim = by_source(lineage_claims({"models": models}))["Mask R-CNN §5.1, Table 3"]
    assert claim["holds"] is False and "equal steps (250): 0.650 -> 0.500" in claim["measured"]


def test_paper_scale_holds_from_a_third_of_the_papers_factor():
    scale = {"rcnn_features_s": 30.0, "fast_rcnn_features_s": 0.5, "regions": 2000,
             "image_size": [600, 800]}  # fmt: skip
    claim = by_source(lineage_claims(report(paper_scale=scale)))["Fast R-CNN §4.4, Table 4"]
    assert claim["holds"] is True and "(60x)" in claim["measured"]
    assert "2000 regions warped to 224 px hold 209x the pixels" in claim["why"]
    slow = {**scale, "rcnn_features_s": 20.0}  # 40x: below 146 / 3
    assert by_source(lineage_claims(report(paper_scale=slow)))[
        "Fast R-CNN §4.4, Table 4"]["holds"] is False  # fmt: skip


def test_svd_that_costs_more_than_a_hundredth_of_ap_does_not_hold():
    costly = report()
    costly["models"]["fast_rcnn"]["svd"] = {**SVD, "box_AP": 0.38}
    claim = by_source(lineage_claims(costly))["Fast R-CNN §3.1, §4.4, Fig. 2"]
    assert claim["holds"] is False


def test_claims_of_models_left_out_are_not_in_the_table():
    partial = report()
    del partial["models"]["rcnn"], partial["models"]["fast_rcnn"]
    assert [claim["source"] for claim in lineage_claims(partial)] == ["Mask R-CNN §5.1, Table 3"]


def test_the_table_has_a_row_per_claim():
    claims = lineage_claims(report())
    lines = claims_table(claims).splitlines()
    assert lines[0] == "| paper | claim | paper's number | measured | holds | why |"
    assert len(lines) == 2 + len(claims) and all(line.count(" | ") == 5 for line in lines[2:])
