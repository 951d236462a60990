"""Looking at it: dataset statistics, loss and mask figures, the student's export, tool arguments."""
