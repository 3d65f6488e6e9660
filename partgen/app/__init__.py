"""partgen-app: the web app (Gradio) over the pipelines: Generate, Segment and Inspect tabs.

engine  the jobs (the app's only import of the pipelines; no gradio)
scene   the GLB views: parts exploded or hidden, voxels as cubes (numpy + trimesh)
ui      the page (gradio Blocks), sessions and their temp folders, the queue
main    the Hydra entry point `partgen-app` (conf/app.yaml)
Nothing is imported here: gradio loads only when the app is built.
"""
