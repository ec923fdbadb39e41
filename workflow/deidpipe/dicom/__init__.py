"""Byte-level DICOM: the element reader, file meta and transfer syntaxes, standard headers."""
