"""`seglab explain`: the study text's figures, drawn by the code seglab runs.

Each figure of the study text (`shared/seed/`) is computed by the library's own functions
and modules (the CNN's layers, selective search, RoI pooling and RoIAlign, the anchor
generator and matcher, the FPN, the mask branch, the U-Net and its overlap-tile
prediction and weight map) on a real image, then drawn with matplotlib and Pillow into one
self-contained HTML page (`page.py`). One module per group of figures: `cnn` (1-3),
`proposals` (4 R-CNN, 5 selective search), `fast_rcnn` (6), `rpn` (7, 8), `mask_rcnn`
(9, 11, 12), `roi_align` (10), `unet` (13).

This package sits at the top of seglab beside `cli`: it may import anything below it,
and nothing below imports it.
"""
