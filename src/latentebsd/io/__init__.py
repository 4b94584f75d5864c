"""File formats of the workflow: one module per format, its reader beside its writer.

=====================  ===========================================================
module                 format
=====================  ===========================================================
:mod:`.atomic`         write under a temporary name, rename when complete
:mod:`.patterns`       raw pattern files (anything kikuchipy reads), EDAX UP2 writing
:mod:`.preprocessed`   the preprocessed scan (``results/preprocessed/{scan}.h5``)
:mod:`.sample`         the training / validation sample (``results/sample/dataset.h5``)
:mod:`.truth`          ground truth of a simulated scan (``{scan}_truth.h5``)
:mod:`.weights`        a trained model (``results/models/{variant}/weights.pt``)
:mod:`.cube`           the latent cube (``results/latent/{variant}/{scan}.nc`` + TIFF)
:mod:`.index`          Hough-indexing results (``results/index/{source}/{scan}.h5`` + ``.ang``)
:mod:`.metrics`        per-pattern decoded-vs-original metrics
:mod:`.conventional`   conventional EBSD maps (IPF, IQ, KAM, GROD, sharpness)
:mod:`.analogues`      latent KAM / GROD maps (``results/benchmark/analogues/``)
:mod:`.saliency`       occlusion maps of latent features (``results/benchmark/saliency/``)
=====================  ===========================================================

These modules import no stage module; every stage reads and writes through them.
"""
