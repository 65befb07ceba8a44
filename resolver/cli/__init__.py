"""The geoweb command."""
