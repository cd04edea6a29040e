//! Templates: base disk images in `images_dir` (id = file name without its extension) or the
//! volumes of a libvirt storage pool (id = volume name without its extension).

use std::path::{Path, PathBuf};

use berth_core::ProviderError;

use crate::conn::{Libvirt, is_missing, map_err};
use crate::image::QemuImg;

/// File extensions taken for template images.
const IMAGE_EXTENSIONS: &[&str] = &["qcow2", "img", "raw"];

/// A template Berth can clone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TemplateImage {
    pub id: String,
    pub path: PathBuf,
    /// `qcow2` or `raw` (what `-F` gets).
    pub format: String,
    pub virtual_size: u64,
}

/// A template name: letters, digits, `.`, `_`, `-`; not starting with `.`; no path.
pub fn check_template_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 128
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "must be a template name (letters, digits, '.', '_', '-'; no path) (got {name:?})"
        ))
    }
}

fn stem(file: &str) -> Option<&str> {
    let (stem, ext) = file.rsplit_once('.')?;
    (IMAGE_EXTENSIONS.contains(&ext) && check_template_name(stem).is_ok()).then_some(stem)
}

/// Where templates come from.
pub struct TemplateSource<'a> {
    pub images_dir: Option<&'a Path>,
    pub pool: Option<&'a str>,
    pub qemu_img: &'a QemuImg,
    pub libvirt: &'a Libvirt,
}

impl TemplateSource<'_> {
    /// Every template, directory first, sorted by id.
    pub async fn list(&self) -> Result<Vec<TemplateImage>, ProviderError> {
        let mut out = Vec::new();
        for (id, path) in self.dir_entries()? {
            let info = self.qemu_img.info(&path).await?;
            out.push(TemplateImage {
                id,
                path,
                format: info.format,
                virtual_size: info.virtual_size,
            });
        }
        out.extend(self.pool_volumes(None).await?);
        out.sort_by(|a, b| a.id.cmp(&b.id));
        out.dedup_by(|a, b| a.id == b.id);
        Ok(out)
    }

    /// The template `id`, with its real format and size; `InvalidSpec` on `field` naming what
    /// exists when there is no such template, or when its image cannot be read.
    pub async fn resolve(&self, field: &str, id: &str) -> Result<TemplateImage, ProviderError> {
        check_template_name(id).map_err(|m| ProviderError::invalid(field, m))?;
        if let Some((_, path)) = self.dir_entries()?.into_iter().find(|(i, _)| i == id) {
            let info = self.qemu_img.info(&path).await.map_err(|e| match e {
                // qemu-img ran and could not read the image: the template is bad.
                ProviderError::Internal { .. } => {
                    ProviderError::invalid(field, format!("template {id} ({}) cannot be read: {e}", path.display()))
                }
                // qemu-img missing or slow: the host's problem, not the order's.
                other => other,
            })?;
            if info.format != "qcow2" && info.format != "raw" {
                return Err(ProviderError::invalid(
                    field,
                    format!(
                        "template {id} is a {} image; Berth clones qcow2 or raw templates",
                        info.format
                    ),
                ));
            }
            return Ok(TemplateImage {
                id: id.to_owned(),
                path,
                format: info.format,
                virtual_size: info.virtual_size,
            });
        }
        if let Some(t) = self.pool_volumes(Some(id)).await?.into_iter().next() {
            return Ok(t);
        }
        let known: Vec<String> = self
            .list()
            .await
            .map(|l| l.into_iter().map(|t| t.id).collect())
            .unwrap_or_default();
        Err(ProviderError::invalid(
            field,
            format!(
                "no template {id:?} in {}; available: {}",
                self.describe(),
                if known.is_empty() {
                    "none".to_owned()
                } else {
                    known.join(", ")
                }
            ),
        ))
    }

    fn describe(&self) -> String {
        match (self.images_dir, self.pool) {
            (Some(d), Some(p)) => format!("{} or storage pool {p}", d.display()),
            (Some(d), None) => d.display().to_string(),
            (None, Some(p)) => format!("storage pool {p}"),
            (None, None) => "no template source".to_owned(),
        }
    }

    fn dir_entries(&self) -> Result<Vec<(String, PathBuf)>, ProviderError> {
        let Some(dir) = self.images_dir else {
            return Ok(Vec::new());
        };
        let entries = std::fs::read_dir(dir)
            .map_err(|e| ProviderError::unavailable(format!("cannot read images_dir {}: {e}", dir.display())))?;
        let mut out = Vec::new();
        for entry in entries.flatten() {
            let name = entry.file_name();
            let Some(name) = name.to_str() else { continue };
            if let Some(id) = stem(name)
                && entry.file_type().is_ok_and(|t| t.is_file() || t.is_symlink())
            {
                out.push((id.to_owned(), entry.path()));
            }
        }
        out.sort();
        Ok(out)
    }

    /// The pool's volumes (only `only` when given).
    async fn pool_volumes(&self, only: Option<&str>) -> Result<Vec<TemplateImage>, ProviderError> {
        let Some(pool) = self.pool else {
            return Ok(Vec::new());
        };
        let (pool, only) = (pool.to_owned(), only.map(str::to_owned));
        self.libvirt
            .call("listing the template pool", move |c| {
                let p = c.lookup_storage_pool_by_name(&pool).map_err(|e| {
                    if is_missing(&e) {
                        ProviderError::unavailable(format!("storage pool {pool} does not exist (template_pool)"))
                    } else {
                        map_err(e)
                    }
                })?;
                let _ = p.refresh(0);
                let mut out = Vec::new();
                for vol in p.list_all_volumes(0).map_err(map_err)? {
                    let name = vol.name().map_err(map_err)?;
                    let Some(id) = stem(&name) else {
                        continue;
                    };
                    if only.as_deref().is_some_and(|o| o != id) {
                        continue;
                    }
                    let xml = vol.xml_desc(0).map_err(map_err)?;
                    let (format, size) = volume_facts(&xml);
                    // The same rules as for files: qcow2 or raw images with a known size.
                    if !matches!(format.as_str(), "qcow2" | "raw") || size == 0 {
                        continue;
                    }
                    out.push(TemplateImage {
                        id: id.to_owned(),
                        path: PathBuf::from(vol.path().map_err(map_err)?),
                        format,
                        virtual_size: size,
                    });
                }
                Ok(out)
            })
            .await
    }
}

/// Format (default raw) and capacity of a storage volume's XML.
fn volume_facts(xml: &str) -> (String, u64) {
    let Ok(doc) = roxmltree::Document::parse(xml) else {
        return ("raw".into(), 0);
    };
    let format = doc
        .descendants()
        .find(|n| n.has_tag_name("format") && n.parent().is_some_and(|p| p.has_tag_name("target")))
        .and_then(|n| n.attribute("type"))
        .unwrap_or("raw")
        .to_owned();
    let size = doc
        .descendants()
        .find(|n| n.has_tag_name("capacity"))
        .and_then(|n| n.text())
        .and_then(|t| t.trim().parse().ok())
        .unwrap_or(0);
    (format, size)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_stems() {
        assert_eq!(stem("debian-12.qcow2"), Some("debian-12"));
        assert_eq!(stem("alma.9.img"), Some("alma.9"));
        assert_eq!(stem("notes.txt"), None);
        assert_eq!(stem(".hidden.qcow2"), None);
        for bad in ["", "../x", "a/b", ".x", "a b"] {
            assert!(check_template_name(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn reads_volume_xml() {
        let xml = "<volume type='file'><name>deb.qcow2</name><capacity unit='bytes'>2147483648</capacity>\
                   <target><path>/p/deb.qcow2</path><format type='qcow2'/></target></volume>";
        assert_eq!(volume_facts(xml), ("qcow2".to_owned(), 2 << 30));
    }
}
