//! What each element of an observation is, in the words of the observation tables of
//! Gymnasium 1.4.0's `hopper_v5.py`, `half_cheetah_v5.py` and `ant_v5.py`.
//!
//! Ant's last 78 elements are `cfrc_ext[1:]`: for each body but the world, in model order,
//! MuJoCo's 6-vector of the external (contact) force on it at its centre of mass, torque
//! first, then force (`mjData.cfrc_ext`, "com-based external force on body (torque:force)";
//! Gymnasium's text lists force before torque, the array has torque first). The bodies are
//! named as Gymnasium's body-part table names them (the ankles have no name in `ant.xml`).

use super::MujocoTask;

/// Hopper-v5's 11: `qpos[1:]` then `qvel` (clipped to ±10).
const HOPPER: [&str; 11] = [
    "z-coordinate of the torso (height of hopper)",
    "angle of the torso",
    "angle of the thigh joint",
    "angle of the leg joint",
    "angle of the foot joint",
    "velocity of the x-coordinate of the torso",
    "velocity of the z-coordinate (height) of the torso",
    "angular velocity of the angle of the torso",
    "angular velocity of the thigh hinge",
    "angular velocity of the leg hinge",
    "angular velocity of the foot hinge",
];

/// HalfCheetah-v5's 17: `qpos[1:]` then `qvel`.
const HALF_CHEETAH: [&str; 17] = [
    "z-coordinate of the front tip",
    "angle of the front tip",
    "angle of the back thigh",
    "angle of the back shin",
    "angle of the back foot",
    "angle of the front thigh",
    "angle of the front shin",
    "angle of the front foot",
    "velocity of the x-coordinate of front tip",
    "velocity of the z-coordinate of front tip",
    "angular velocity of the front tip",
    "angular velocity of the back thigh",
    "angular velocity of the back shin",
    "angular velocity of the back foot",
    "angular velocity of the front thigh",
    "angular velocity of the front shin",
    "angular velocity of the front foot",
];

/// Ant-v5's first 27: `qpos[2:]` then `qvel`.
const ANT_STATE: [&str; 27] = [
    "z-coordinate of the torso (centre)",
    "w-orientation of the torso (centre)",
    "x-orientation of the torso (centre)",
    "y-orientation of the torso (centre)",
    "z-orientation of the torso (centre)",
    "angle between torso and first link on front left",
    "angle between the two links on the front left",
    "angle between torso and first link on front right",
    "angle between the two links on the front right",
    "angle between torso and first link on back left",
    "angle between the two links on the back left",
    "angle between torso and first link on back right",
    "angle between the two links on the back right",
    "x-coordinate velocity of the torso",
    "y-coordinate velocity of the torso",
    "z-coordinate velocity of the torso",
    "x-coordinate angular velocity of the torso",
    "y-coordinate angular velocity of the torso",
    "z-coordinate angular velocity of the torso",
    "angular velocity of angle between torso and front left link",
    "angular velocity of the angle between front left links",
    "angular velocity of angle between torso and front right link",
    "angular velocity of the angle between front right links",
    "angular velocity of angle between torso and back left link",
    "angular velocity of the angle between back left links",
    "angular velocity of angle between torso and back right link",
    "angular velocity of the angle between back right links",
];

/// Ant's bodies after the world body, in model order, as Gymnasium's body-part table names
/// them.
pub const ANT_BODIES: [&str; 13] = [
    "torso",
    "front_left_leg",
    "aux_1 (front left leg)",
    "ankle_1 (front left leg)",
    "front_right_leg",
    "aux_2 (front right leg)",
    "ankle_2 (front right leg)",
    "back_leg (back left leg)",
    "aux_3 (back left leg)",
    "ankle_3 (back left leg)",
    "right_back_leg",
    "aux_4 (back right leg)",
    "ankle_4 (back right leg)",
];

/// The six components of one body's `cfrc_ext` row, in MuJoCo's order.
const CFRC_COMPONENTS: [&str; 6] = [
    "torque x", "torque y", "torque z", "force x", "force y", "force z",
];

/// The name of every observation element of `task`, in observation order.
pub fn feature_names(task: MujocoTask) -> Vec<String> {
    let own = |names: &[&str]| names.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    match task {
        MujocoTask::Hopper => own(&HOPPER),
        MujocoTask::HalfCheetah => own(&HALF_CHEETAH),
        MujocoTask::Ant => {
            let mut names = own(&ANT_STATE);
            for body in ANT_BODIES {
                for c in CFRC_COMPONENTS {
                    names.push(format!(
                        "external {c} on the {body} (cfrc_ext, clipped to ±1)"
                    ));
                }
            }
            names
        }
    }
}
