"""Reading and preparing image data: files, preprocessing, synthetic phantoms."""
