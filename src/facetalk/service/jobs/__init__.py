"""What both queue backends share: the job table, files on disk, the render code and the queue interface."""
