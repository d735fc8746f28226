"""Tests of the frame transports."""
