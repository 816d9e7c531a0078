"""Compose one world's MJCF from robot templates in ``assets/mjcf`` and primitive props.

Every engine builds its E identical worlds from the string this module returns, so MuJoCo and
Newton read exactly the same model. A robot template is a complete MJCF file whose robot is one
top-level body; :func:`compose_scene` copies that body once per robot, prefixing every name
(``ant0_hip_1``), and copies the template's actuators with the same prefix.

Names are the contract with the engines: ``Scene.actors`` lists the bodies that carry a free
joint (root states, IsaacGymEnvs order), ``Scene.dofs`` the 1-dof joints (hinge / slide) in the
order of the ``dof_pos`` / ``dof_vel`` / torque columns.
"""
from __future__ import annotations

import copy
import os
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from typing import List, Optional, Sequence, Tuple

__all__ = ["ASSET_DIR", "Prop", "RobotPlacement", "Scene", "compose_scene"]

ASSET_DIR = os.path.normpath(
    os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "assets", "mjcf")
)


@dataclass(frozen=True)
class RobotPlacement:
    """One copy of a robot template: ``asset`` (file in assets/mjcf), its root body, a prefix."""

    asset: str
    root_body: str
    prefix: str
    pos: Tuple[float, float, float] = (0.0, 0.0, 0.0)


@dataclass(frozen=True)
class Prop:
    """A free-floating box prop (one actor)."""

    name: str
    half_size: Tuple[float, float, float]
    mass: float
    friction: float
    pos: Tuple[float, float, float]
    rgba: Tuple[float, float, float, float] = (0.85, 0.75, 0.3, 1.0)


@dataclass(frozen=True)
class Scene:
    """A composed world: its MJCF text and the names engines index by."""

    xml: str
    actors: Tuple[str, ...]          # bodies with a free joint, in root-state order
    dofs: Tuple[str, ...]            # 1-dof joints, in dof order
    timestep: float
    integrator: str
    floor_friction: float
    extra_visuals: Tuple[str, ...] = field(default_factory=tuple)
    # what the world was composed from, for engines that build it from parts (Isaac Gym loads
    # each robot template as an asset and makes the props with create_box)
    robots: Tuple[RobotPlacement, ...] = field(default_factory=tuple)
    props: Tuple[Prop, ...] = field(default_factory=tuple)


def _fmt(values: Sequence[float]) -> str:
    return " ".join("%.6g" % v for v in values)


def _prefixed(elem: ET.Element, prefix: str) -> ET.Element:
    out = copy.deepcopy(elem)
    for node in out.iter():
        for key in ("name", "joint"):
            if key in node.attrib:
                node.attrib[key] = prefix + node.attrib[key]
    return out


def _load_template(asset: str) -> ET.Element:
    path = os.path.join(ASSET_DIR, asset)
    if not os.path.isfile(path):
        raise FileNotFoundError("robot asset not found: %s" % path)
    return ET.parse(path).getroot()


def compose_scene(
    robots: Sequence[RobotPlacement],
    props: Sequence[Prop],
    *,
    timestep: float,
    integrator: str = "implicitfast",
    floor_friction: float = 0.6,
    floor_size: float = 20.0,
    goal_marker: Optional[float] = None,
    cone: str = "pyramidal",
) -> Scene:
    """Return the MJCF of one world: a floor, ``robots`` and ``props``.

    ``goal_marker`` (a radius) adds a non-colliding mocap disc named ``goal`` for rendering only;
    physics scenes leave it out, so the engines never see it. ``cone``: MuJoCo's friction cone,
    ``pyramidal`` (its default: four facets about the floor contacts' axes, world x and y, so a
    body slides about 1.4x more easily along the world's diagonals, whatever its yaw) or
    ``elliptic`` (the same friction in every direction).
    """
    if cone not in ("pyramidal", "elliptic"):
        raise ValueError("sim.cone must be 'pyramidal' or 'elliptic' (got %r)" % (cone,))
    root = ET.Element("mujoco", model="scene")
    ET.SubElement(root, "compiler", angle="degree", inertiafromgeom="true")
    ET.SubElement(root, "option", timestep="%.6g" % timestep, integrator=integrator, cone=cone)
    visual = ET.SubElement(root, "visual")
    ET.SubElement(visual, "headlight", ambient="0.4 0.4 0.4", diffuse="0.6 0.6 0.6")
    asset = ET.SubElement(root, "asset")
    ET.SubElement(asset, "texture", name="grid", type="2d", builtin="checker", width="512",
                  height="512", rgb1="0.32 0.36 0.4", rgb2="0.26 0.3 0.34")
    ET.SubElement(asset, "material", name="grid", texture="grid", texrepeat="20 20")
    world = ET.SubElement(root, "worldbody")
    ET.SubElement(world, "light", pos="0 0 6", dir="0 0 -1", directional="true")
    ET.SubElement(world, "geom", name="floor", type="plane", material="grid",
                  size="%g %g 0.1" % (floor_size, floor_size),
                  friction="%g 0.005 0.0001" % floor_friction, condim="3", margin="0")
    actuators = ET.SubElement(root, "actuator")
    actors: List[str] = []
    dofs: List[str] = []

    for robot in robots:
        template = _load_template(robot.asset)
        body = template.find("./worldbody/body[@name='%s']" % robot.root_body)
        if body is None:
            raise ValueError("asset %s has no top-level body %r" % (robot.asset, robot.root_body))
        body = _prefixed(body, robot.prefix)
        base = [float(v) for v in body.attrib.get("pos", "0 0 0").split()]
        body.attrib["pos"] = _fmt([b + p for b, p in zip(base, robot.pos)])
        world.append(body)
        if body.find("freejoint") is not None:
            actors.append(body.attrib["name"])
        for joint in body.iter("joint"):
            if joint.attrib.get("type", "hinge") in ("hinge", "slide"):
                dofs.append(joint.attrib["name"])
        for motor in template.findall("./actuator/*"):
            actuators.append(_prefixed(motor, robot.prefix))

    for prop in props:
        b = ET.SubElement(world, "body", name=prop.name, pos=_fmt(prop.pos))
        ET.SubElement(b, "freejoint", name=prop.name + "_root")
        ET.SubElement(b, "geom", name=prop.name + "_geom", type="box", size=_fmt(prop.half_size),
                      mass="%g" % prop.mass, friction="%g 0.005 0.0001" % prop.friction,
                      condim="3", margin="0", rgba=_fmt(prop.rgba))
        actors.append(prop.name)

    visuals: List[str] = []
    if goal_marker is not None:
        g = ET.SubElement(world, "body", name="goal", mocap="true", pos="0 0 0")
        ET.SubElement(g, "geom", name="goal_geom", type="cylinder", size="%g 0.005" % goal_marker,
                      contype="0", conaffinity="0", rgba="0.1 0.85 0.2 0.6")
        visuals.append("goal")

    if hasattr(ET, "indent"):  # Python 3.9+: readable XML; 3.8 writes one line
        ET.indent(root)  # novermin
    return Scene(
        xml=ET.tostring(root, encoding="unicode"),
        actors=tuple(actors),
        dofs=tuple(dofs),
        timestep=timestep,
        integrator=integrator,
        floor_friction=floor_friction,
        extra_visuals=tuple(visuals),
        robots=tuple(robots),
        props=tuple(props),
    )
