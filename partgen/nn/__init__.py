"""Neural-network building blocks: attention dispatch, sparse convolution, transformer blocks."""
