"""Body keypoints for occlusion-aware re-id (HOReID): the pose model, HOReID's graph, a content-keyed cache."""

from reidkit.pose.cache import KeypointCache, KeypointCacheError, default_cache_path, keypoints_for
from reidkit.pose.movenet import COCO_KEYPOINTS, MoveNet, PoseError, find_movenet
from reidkit.pose.skeleton import NODES, adjacency, coco_to_horeid, heatmaps

__all__ = [
    "COCO_KEYPOINTS",
    "NODES",
    "KeypointCache",
    "KeypointCacheError",
    "MoveNet",
    "PoseError",
    "adjacency",
    "coco_to_horeid",
    "default_cache_path",
    "find_movenet",
    "heatmaps",
    "keypoints_for",
]
