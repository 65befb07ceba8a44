"""The default ad hoc GeoReport v2 service: a place to file reports for points nobody covers."""
