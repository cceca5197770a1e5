"""KFP components: each declares inputs/outputs and makes one call into a datawheel step."""
