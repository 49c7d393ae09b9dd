"""BioImage Model Zoo: export a napari-medseg U-Net as a zoo package, and import zoo packages of our U-Net.

:mod:`~napari_medseg.zoo.package` writes packages (``medseg export --format
bioimageio``), :mod:`~napari_medseg.zoo.importer` reads them back into model
folders (``medseg import``).  Both need the ``[export]`` extra
(bioimageio.spec, bioimageio.core, onnx...); see
:func:`napari_medseg.models.export.require`.  This package sits above
``inference`` (it uses the card normalisation and the U-Net's receptive
field from there), which ``models`` may not import.
"""
