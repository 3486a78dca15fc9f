"""Test models covering the awkward cases bulkpar has to handle."""
