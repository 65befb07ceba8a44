"""Boundary files in, valid WGS84 polygons and a spatial index out."""
