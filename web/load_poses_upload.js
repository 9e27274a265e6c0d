// Upload button of PoseCrafter Load Poses. ComfyUI's own upload buttons (image_upload, video_upload,
// audio_upload) keep only images, videos or audio from the chosen files, so a pose file (.json, or a .zip of
// OpenPose keypoint files) needs this one. It sends the file to ComfyUI's upload endpoint, which stores any
// file in the input folder, and selects it in the node's file list.
import { app } from "../../scripts/app.js";
import { api } from "../../scripts/api.js";

const NODE = "PoseCrafterLoadPoses";
const FILE_INPUT = "file";
const ACCEPT = ".json,.zip,application/json,application/zip";

function report(message) {
  const toast = app.extensionManager?.toast;
  if (toast) toast.add({ severity: "error", summary: "PoseCrafter Load Poses", detail: message, life: 8000 });
  else alert(message);
}

async function upload(node, file) {
  const body = new FormData();
  body.append("image", file); // the endpoint's field name, whatever the file is
  const response = await api.fetchApi("/upload/image", { method: "POST", body });
  if (response.status !== 200) {
    report(`Uploading ${file.name} failed: ${response.status} ${response.statusText}`);
    return;
  }
  const { name, subfolder } = await response.json();
  const path = subfolder ? `${subfolder}/${name}` : name;
  const widget = node.widgets.find((w) => w.name === FILE_INPUT);
  if (!widget.options.values.includes(path)) widget.options.values.push(path);
  widget.value = path;
  widget.callback?.(path);
  node.setDirtyCanvas(true, true);
}

function chooseFile(node) {
  const input = document.createElement("input");
  input.type = "file";
  input.accept = ACCEPT;
  input.onchange = () => {
    if (input.files.length) upload(node, input.files[0]).catch((error) => report(String(error)));
  };
  input.click();
}

app.registerExtension({
  name: "PoseCrafter.LoadPosesUpload",
  async beforeRegisterNodeDef(nodeType, nodeData) {
    if (nodeData.name !== NODE) return;
    const onNodeCreated = nodeType.prototype.onNodeCreated;
    nodeType.prototype.onNodeCreated = function () {
      const result = onNodeCreated?.apply(this, arguments);
      const button = this.addWidget("button", "choose pose file to upload", null, () => chooseFile(this), {
        serialize: false, // not sent to ComfyUI
      });
      button.serialize = false; // no value in the saved workflow's widgets_values
      return result;
    };
  },
});
