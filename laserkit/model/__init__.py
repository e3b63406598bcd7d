"""What a loaded model is made of: the roles of its matrices as data (architectures) and the
named targets a command line asks for (``fc_in@29`` → the matrices it changes)."""
