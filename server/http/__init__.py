"""The HTTP file server: the sans-IO answer (respond), its [http] table (config) and the h11-on-trio
service, which opens files through the TFTP root's confinement (tftp.paths)."""
