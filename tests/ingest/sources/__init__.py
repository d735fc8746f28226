"""Tests of the camera sources."""
