/**
 * Where the agent puts a checkpoint, shared with the webhook (which mounts it into restore pods):
 *
 *   <storageRoot>/<namespace>/<spec.storage.nodeLocal.path, default the name>/   (nodeLocalDir, src/api)
 *       <container>/manifest.json, filelocks.img, files.img, fdinfo-<pid>.img     (one image per container)
 *
 * One image per container: a restore pod's container restores exactly the locks that its
 * namesake in the source pod held (two containers restoring one shared image would fight over
 * the same locks). Every selected container gets an image, even with no locks, so its shim
 * always finds one.
 *
 * The handover vault keys one entry per container too: `<namespace>/<name>.<container>`, so each
 * container's shim receives its own descriptions, once.
 */
export function containerImageDir(checkpointDir: string, container: string): string {
  return `${checkpointDir.replace(/\/+$/, '')}/${container}`;
}

export function vaultKey(namespace: string, name: string, container: string): string {
  return `${namespace}/${name}.${container}`;
}
